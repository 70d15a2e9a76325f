"""The soak: the whole loop for N minutes under a random fault schedule, then the checks.

`make soak` (`python -m bench.soak`) runs `SOAK_RUNS` runs of `SOAK_MINUTES` each,
the schedule of run i drawn from `SOAK_SEED + i`. One run starts a Tansu broker,
moto's S3 behind a fault proxy, the machine's Redis behind another, a streams worker
and a paper trader on the sim feed (bars published too), both as processes. Then,
until the time is up, every few seconds one fault from the seed:

- `kill_worker` / `kill_trader`: SIGKILL (the worker's lake sink child too), restart
  after a moment; the trader restarts on the same spool and order journal;
- `s3_<mode>` / `redis_<mode>`: the proxy in `blackhole`, `refuse` or (S3) `http_error`
  503 SlowDown for a few seconds;
- `restart_broker` (with `SOAK_DURABLE=1`): SIGKILL of the durable broker, started
  again on its storage.

At the end every fault is healed, the trader's spool drained, and the run checks:

- every event on Kafka (bars, signals, orders, outcomes) is in the lake: `lost` =
  event ids on Kafka and not in the lake; `duplicated` = lake rows beyond the
  records Kafka holds for that event id (the trader's outbox may resend a batch
  whose ack a kill took with it: `resent`, counted apart; consumers dedup by id);
- the online store equals a recomputation from Kafka (`online_mismatches`);
- positions rebuilt from the `orders` topic equal the paper venue's (`/healthz`).

With `SOAK_DURABLE=1` the broker is durable (Tansu on moto's S3, not behind the
proxy) and `restart_broker` (SIGKILL, then the same port and storage) joins the
schedule; by default the broker keeps records in memory and is never restarted.
Results: one JSON line per run on stdout and `bench/out/soak.json`; with
`SOAK_RECORD=1` the totals replace the "Soak" section of `bench/RESULTS.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SoakResult", "main", "replace_section", "run_once", "schedule", "soak_section"]

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--lake-batch-events", "300", "--lake-batch-seconds", "0.5", "--metrics-port", "0"]
SPEED = 5_000.0  # a sim day in about 17 s
FAULTS = (
    "kill_worker",
    "kill_trader",
    "s3_blackhole",
    "s3_refuse",
    "s3_http_error",
    "redis_blackhole",
    "redis_refuse",
)
#: With a durable broker (`SOAK_DURABLE=1`) the broker is restarted too.
DURABLE_FAULTS = (*FAULTS, "restart_broker")


@dataclass
class SoakResult:
    """What one run did and found."""

    seed: int
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    resent: int = 0
    online_mismatches: int = 0
    position_mismatches: int = 0
    phases_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Say whether nothing was lost, duplicated or different."""
        return not (
            self.lost or self.duplicated or self.online_mismatches or self.position_mismatches
        )


def schedule(
    seed: int, seconds: float, faults: tuple[str, ...] = FAULTS
) -> list[tuple[float, str, float]]:
    """Return (at_s, fault, hold_s) drawn from the seed, the first after 3 s."""
    rng = random.Random(seed)
    out: list[tuple[float, str, float]] = []
    at = 3.0
    while at < seconds:
        out.append((round(at, 2), rng.choice(faults), round(rng.uniform(1.0, 5.0), 2)))
        at += rng.uniform(3.0, 8.0)
    return out


class _Trader:
    """A `tradeloop trade` process on the sim feed (API on `port`)."""

    def __init__(self, env: dict[str, str], port: int, log: Path, seed: int) -> None:
        self.env, self.port, self.log, self.seed = env, port, log, seed
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        argv = [str(Path(sys.executable).with_name("tradeloop")), "trade", "--feed", "sim"]
        argv += ["--speed", str(SPEED), "--http-port", str(self.port)]
        argv += ["--seed", str(self.seed + self.starts), "--run-id", f"soak{self.seed}"]
        self.starts += 1
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.kill()

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return dict(json.loads(r.read()))
        except (OSError, ValueError):
            return None


def _wait(cond: Any, timeout_s: float, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval_s)
    return last


def run_once(minutes: float, seed: int, work: Path, *, durable: bool = False) -> SoakResult:
    """Run the loop for `minutes` under the seed's schedule; check and return the counts."""
    from features.store import TradeloopFeatureStore
    from infra.contracts import STRATEGIES
    from infra.settings import Settings, settings_env
    from infra.stack import BrokerStorage, free_port, start_moto, start_tansu
    from tests.helpers import REDIS_HOST, REDIS_PORT, TEST_HMAC_KEY, unique
    from tests.kit.faults import ProxyKit
    from tests.kit.harness import WorkerProcess

    result = SoakResult(seed=seed)
    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    kit = ProxyKit()
    moto = start_moto(log_dir=work, bucket="soak")
    kafka_port = free_port()
    storage = BrokerStorage(moto.address, "soak-broker") if durable else None
    broker = start_tansu(kafka_port, log_dir=work, storage=storage)
    worker: WorkerProcess | None = None
    trader: _Trader | None = None
    try:
        s3 = kit.to(moto.address, name="s3")
        redis = kit.to(f"{REDIS_HOST}:{REDIS_PORT}", name="redis")
        prefix = unique("soak")
        values: dict[str, Any] = {
            "TOPIC_PREFIX": f"{prefix}.",
            "KAFKA_BOOTSTRAP_SERVERS": broker.address,
            "S3_ENDPOINT_URL": s3.url,
            "S3_BUCKET": "soak",
            "LAKE_URI": f"s3://soak/{prefix}/lake",
            "S3_CONNECT_TIMEOUT_MS": 500,
            "S3_READ_TIMEOUT_MS": 1500,
            "S3_MAX_ATTEMPTS": 1,
            "REDIS_URL": f"redis://{redis.address}/0",
            "REDIS_TIMEOUT_MS": 500,
            "FEAST_REPO_DIR": str(work / "repo"),
            "STORE_DIR": str(work / "store"),
            "OUTBOX_DIR": str(work / "outbox"),
            "RELEASE_STATE_PATH": str(work / "release-state.json"),
            "MANIFEST_HMAC_KEY": TEST_HMAC_KEY,
            "TOPIC_PARTITIONS": 2,
            "EMIT_BARS": True,
            "KAFKA_SESSION_TIMEOUT_MS": 6000,
        }
        settings = Settings(**values)
        direct = settings.model_copy(
            update={
                "s3_endpoint_url": moto.address,
                "redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            }
        )
        env = {**os.environ, **settings_env(settings), "TRADELOOP_HOME": str(work / "home")}
        env["PYTHONUNBUFFERED"] = "1"
        TradeloopFeatureStore(settings).apply()
        worker = WorkerProcess(settings, work / "worker.log", args=FAST, env=env).start()
        trader = _Trader(env, free_port(), work / "trader.log", seed)
        trader.start()
        ready = _wait(
            lambda: "lake sink assigned" in worker.log() and trader.health() is not None, 180
        )
        if not ready:
            result.notes.append("the worker or the trader was not up within 180 s")
        result.phases_s["start"] = round(time.monotonic() - started, 1)
        faults: Counter[str] = Counter()
        t0 = time.monotonic()
        for at, fault, hold in schedule(seed, minutes * 60, DURABLE_FAULTS if durable else FAULTS):
            while time.monotonic() - t0 < at:
                time.sleep(0.1)
            faults[fault] += 1
            if fault == "kill_worker":
                worker.kill()
                time.sleep(min(hold, 2.0))
                worker = WorkerProcess(settings, work / "worker.log", args=FAST, env=env).start()
            elif fault == "kill_trader":
                trader.kill()
                time.sleep(min(hold, 2.0))
                trader.start()
            elif fault == "restart_broker":
                broker.kill()
                time.sleep(min(hold, 2.0))
                broker = start_tansu(kafka_port, log_dir=work, storage=storage, timeout_s=60)
            else:
                target, mode = fault.split("_", 1)
                proxy = s3 if target == "s3" else redis
                proxy.set(mode)  # type: ignore[arg-type]
                time.sleep(hold)
                proxy.heal()
            if not worker.alive:  # counted: a fault must never end a process by itself
                result.notes.append(f"the worker exited by itself after {fault}; restarted")
                worker = WorkerProcess(settings, work / "worker.log", args=FAST, env=env).start()
            if trader.proc is not None and trader.proc.poll() is not None:
                result.notes.append(f"the trader exited by itself after {fault}; restarted")
                trader.start()
        result.faults = dict(faults)
        result.phases_s["faults"] = round(time.monotonic() - t0, 1)
        t1 = time.monotonic()
        # settle: everything up, the spool drained, the venue's positions read
        if not worker.alive:
            result.notes.append("the worker had exited by itself; restarted")
            worker = WorkerProcess(settings, work / "worker.log", args=FAST, env=env).start()
        health = _wait(lambda: (h := trader.health()) and h["outbox"]["depth"] == 0 and h, 120)
        if not health:
            result.notes.append("the trader's spool did not drain within 120 s")
            health = trader.health() or {}
        venue_positions = {
            p["symbol"]: p["quantity"] for p in (health.get("venue") or {}).get("positions", [])
        }
        trader.stop()
        result.phases_s["settle"] = round(time.monotonic() - t1, 1)
        t2 = time.monotonic()
        _check(result, settings, direct, venue_positions, STRATEGIES)
        result.phases_s["check"] = round(time.monotonic() - t2, 1)
    finally:
        if trader is not None:
            trader.kill()
        if worker is not None:
            worker.kill()
        kit.close()
        broker.stop()
        moto.stop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def _check(
    result: SoakResult,
    settings: Any,
    direct: Any,
    venue_positions: dict[str, int],
    strategies: tuple[str, ...],
) -> None:
    from features.store import TradeloopFeatureStore
    from infra.contracts import decode
    from streams.replay import replay_into_features
    from tests.kit.faults import read_topics
    from tests.kit.harness import expected_online, lake_event_ids, online_values
    from trader.venues.ledger import rebuild

    topics = ("bars", "signals", "orders", "outcomes")
    records = asyncio.run(
        read_topics(settings.bootstrap_servers, [settings.topic(t) for t in topics])
    )
    on_kafka: Counter[str] = Counter()
    folded: list[tuple[str, int, int, bytes]] = []
    orders = []
    for r in records:
        event: Any = decode(r.value or b"")
        on_kafka[event.event_id] += 1
        short = r.topic.rsplit(".", 1)[-1]
        if short == "orders":
            orders.append((r.partition, r.offset, event))
        elif short in ("bars", "signals", "outcomes"):
            folded.append((short, r.partition, r.offset, r.value or b""))
    result.events = len(on_kafka)
    result.resent = sum(n - 1 for n in on_kafka.values())

    def landed() -> Counter[str] | None:
        counts = lake_event_ids(direct, topics)
        return counts if set(counts) >= set(on_kafka) else None

    lake = _wait(landed, 180, 1.0) or lake_event_ids(direct, topics)
    result.lost = len(set(on_kafka) - set(lake))
    result.duplicated = sum(max(0, n - on_kafka.get(k, 0)) for k, n in lake.items())

    # the online store against a fold of the same records in partition order
    folded.sort(key=lambda r: (r[0], r[1], r[2]))
    state = replay_into_features(settings, folded, push=False).state
    entities = [(s, k) for s in ("ES", "NQ") for k in strategies]
    want = expected_online(state, entities)
    store = TradeloopFeatureStore(direct)
    got = _wait(lambda: (v := online_values(store, entities)) == want and v, 90, 1.0)
    if not got:
        got = online_values(store, entities)
        result.online_mismatches = sum(
            1 for e, row in want.items() for n, v in row.items() if got[e].get(n) != v
        )

    # positions from the order events (in the order each partition holds them)
    orders.sort(key=lambda o: (o[0], o[1]))
    ledger = rebuild([o[2] for o in orders], {"ES": 50.0, "NQ": 20.0})
    rebuilt = {p.symbol: p.quantity for p in ledger.positions() if p.quantity}
    venue = {s: q for s, q in venue_positions.items() if q}
    result.position_mismatches = len(set(rebuilt.items()) ^ set(venue.items()))
    if result.position_mismatches:
        result.notes.append(f"positions: rebuilt {rebuilt} venue {venue}")


def soak_markdown(results: list[SoakResult], minutes: float, seed: int) -> str:
    """Return the "Soak" section of RESULTS.md for a set of runs."""
    faults: Counter[str] = Counter()
    for r in results:
        faults.update(r.faults)
    total = sum(faults.values())
    row = (
        f"| {len(results)} | {minutes:g} | {seed}..{seed + len(results) - 1} | {total} | "
        f"{sum(r.events for r in results)} | {sum(r.lost for r in results)} | "
        f"{sum(r.duplicated for r in results)} | {sum(r.resent for r in results)} | "
        f"{sum(r.online_mismatches for r in results)} | "
        f"{sum(r.position_mismatches for r in results)} |"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(faults.items()))
    return (
        "## Soak\n\n"
        "`make soak` (bench/soak.py): the worker and a paper trader under a random fault\n"
        "schedule (kill -9 of either, S3 and Redis outages through the fault proxy).\n\n"
        "| runs | minutes each | seeds | faults | events | lost | duplicated | resent by the outbox | online mismatches | position mismatches |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"{row}\n\nFaults injected: {kinds}.\n"
    )


def replace_section(text: str, section: str, heading: str = "## Soak") -> str:
    """Return `text` with its `heading` section replaced by `section` (appended if absent)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return (
        "".join(lines[:start]) + section + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    )


def soak_section(text: str, heading: str = "## Soak") -> str:
    """Return the `heading` section of a Markdown text ('' when it has none)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        return ""
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[start:end]).rstrip("\n") + "\n"


def main() -> int:
    """Run the soak from the environment; exit 1 if any run lost, duplicated or differed."""
    from infra.logging import setup_logging

    setup_logging(os.environ.get("LOG_LEVEL", "WARNING"))
    minutes = float(os.environ.get("SOAK_MINUTES", "5"))
    seed = int(os.environ.get("SOAK_SEED", str(int(time.time()) % 100_000)))
    runs = int(os.environ.get("SOAK_RUNS", "1"))
    durable = os.environ.get("SOAK_DURABLE") == "1"
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i in range(runs):
        work = Path(tempfile.mkdtemp(prefix=f"soak-{seed + i}-"))
        result = run_once(minutes, seed + i, work, durable=durable)
        results.append(result)
        print(json.dumps({**asdict(result), "work": str(work)}), flush=True)
        (out_dir / "soak.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
        if os.environ.get("SOAK_RECORD") == "1":  # after every run: a stopped soak keeps its count
            path = ROOT / "bench" / "RESULTS.md"
            section = soak_markdown(results, minutes, seed)
            path.write_text(replace_section(path.read_text(), section))
    return 0 if all(r.clean for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
