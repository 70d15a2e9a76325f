"""`tradeloop demo`: the whole loop end to end on the embedded stack.

The demo is an orchestrator: it starts the broker (unless one runs), the streams
worker and the trader as subprocesses, runs two training rounds, watches the
trader hot-swap, then prints a summary read back from Kafka, the lake, the model
store and the trader's API. It stops every process it started and leaves the lake
and the models on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from infra.bus import KafkaBus
from infra.contracts import LAKE_TOPICS, MANIFEST_PREFIX, TOPICS
from infra.demo_venue import VenueSimError, bar_ms_for, start_simulator
from infra.objectstore import ObjectNotFoundError, object_store
from infra.settings import Settings, home_dir, stack_state
from infra.stack import ManagedProcess, free_port, start_tansu

console = Console(stderr=True)


class DemoError(RuntimeError):
    """Raise when a demo phase cannot complete; the message says which and why."""


@dataclass
class DemoRun:
    """What the demo started and what it saw."""

    home: Path
    env: dict[str, str]
    logs: Path
    started: list[ManagedProcess] = field(default_factory=list)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    training_rounds: list[dict[str, Any]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def spawn(
        self, name: str, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `tradeloop ARGS` with the demo's environment, logging to a file."""
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(
            [_tradeloop(), *args],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children[name] = proc
        return proc

    def run(self, name: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run `tradeloop ARGS` to completion, its output appended to a log file."""
        proc = subprocess.run(
            [_tradeloop(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        with open(self.logs / f"{name}.log", "a") as log:
            log.write(proc.stdout + proc.stderr)
        return proc

    def stop(self, name: str, timeout_s: float = 20.0) -> int | None:
        """Stop a child with SIGTERM (then SIGKILL); return its exit code."""
        proc = self.children.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def close(self) -> None:
        """Stop every child and every service the demo started."""
        for name in list(self.children):
            self.stop(name)
        for proc in self.started:
            proc.stop()


def _tradeloop() -> str:
    exe = Path(sys.executable).parent / "tradeloop"
    return str(exe) if exe.exists() else "tradeloop"


def _wait(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise DemoError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return {}


def _serving_release(health: dict[str, Any]) -> str:
    models = health.get("models") or {}
    return str(models.get("release") or "")


def _manifests(settings: Settings) -> list[dict[str, Any]]:
    store = object_store(settings)
    out = []
    for key in store.list(MANIFEST_PREFIX):
        name = key.rsplit("/", 1)[-1]
        if name == "latest.json" or not name.endswith(".json"):
            continue
        with contextlib.suppress(ObjectNotFoundError, ValueError):
            out.append(json.loads(store.get(key)))
    return sorted(out, key=lambda m: int(m.get("sequence", 0)))


def _lake_table(settings: Settings, topic: str) -> Any:
    from infra.lake import read_topic

    return read_topic(settings.lake, topic, settings=settings)


def _demo_env(settings: Settings, home: Path, http_port: int, bootstrap: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TRADELOOP_HOME"] = str(home)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env.setdefault("MODEL_POLL_SEC", "5")
    env["HTTP_PORT"] = str(http_port)
    env.setdefault("KAFKA_SESSION_TIMEOUT_MS", "6000")
    env.setdefault("EMIT_BARS", "1")  # bars feed the per-symbol stream features and the lake
    if not settings.manifest_hmac_key.get_secret_value():
        key_file = home / "demo-hmac.key"
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        env["MANIFEST_HMAC_KEY"] = key_file.read_text().strip()
    if not settings.manifest_ed25519_public_keys:
        env.update(_demo_ed25519(home, settings))
    return env


def _demo_ed25519(home: Path, settings: Settings) -> dict[str, str]:
    """Return the demo's Ed25519 release keys (made once, the private key 0600).

    The trainer signs with the private key; the trader verifies with the public one
    only (it is started without the private key).
    """
    import base64

    from cryptography.hazmat.primitives import serialization

    from infra.signing import generate_ed25519, parse_private_key, write_secret_file

    raw = settings.manifest_ed25519_private_key.get_secret_value()
    if raw:
        private_text = raw if ":" in raw else f"ed1:{raw}"
    else:
        key_file = home / "keys" / "demo-ed25519.key"
        if not key_file.exists():
            private, _public = generate_ed25519()
            write_secret_file(key_file, f"demo:{private}")
        private_text = key_file.read_text().strip()
    kid, key = parse_private_key(private_text)
    public = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
    return {
        "MANIFEST_ED25519_PRIVATE_KEY": private_text,
        "MANIFEST_ED25519_PUBLIC_KEYS": f"{kid}:{public}",
    }


@contextlib.contextmanager
def _phase(run: DemoRun, name: str) -> Iterator[None]:
    t0 = time.monotonic()
    with console.status(f"[bold cyan]{name}…"):
        yield
    run.timings_s[name] = time.monotonic() - t0
    console.print(f"[green]✓[/] {name} [dim]({run.timings_s[name]:.1f}s)[/]")


def _train_round(run: DemoRun, settings: Settings, n: int, args: tuple[str, ...]) -> dict[str, Any]:
    before = {m["sequence"] for m in _manifests(settings)}
    proc = run.run(f"train-{n}", "train", "--once", *args, timeout_s=240)
    after = _manifests(settings)
    new = [m for m in after if m["sequence"] not in before]
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    result: dict[str, Any] = {"round": n, "exit_code": proc.returncode, "output": tail}
    if new:
        manifest = new[-1]
        run.releases.append(manifest)
        result["release"] = manifest["release"]
        result["sequence"] = manifest["sequence"]
        result["gate"] = (manifest.get("gate") or {}).get("decision")
    else:
        result["release"] = None
        result["gate"] = "refused" if proc.returncode == 0 else "failed"
    run.training_rounds.append(result)
    return result


def run_demo(
    *,
    bars: int,
    speed: float,
    train_after_s: float,
    second_round_after_s: float,
    train_args: tuple[str, ...] = (),
    venue: str = "paper",
) -> dict[str, Any]:
    """Run the loop and return the summary (also printed by the command)."""
    settings = Settings()
    home = home_dir()
    logs = home / "logs" / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    started: list[ManagedProcess] = []
    kafka = stack_state().get("kafka") or {}
    bootstrap = settings.kafka_bootstrap_servers or ""
    if not bootstrap and kafka.get("bootstrap"):
        bootstrap = str(kafka["bootstrap"])
    http_port = free_port()
    run = DemoRun(home=home, env={}, logs=logs, started=started)
    try:
        with _phase(run, "embedded stack"):
            if not bootstrap or not _reachable(bootstrap, settings):
                proc = start_tansu(log_dir=logs)
                started.append(proc)
                bootstrap = proc.address
            run.env = _demo_env(settings, home, http_port, bootstrap)
            bus = KafkaBus(settings, bootstrap=bootstrap)

        with _phase(run, "streams worker and trader started"):
            run.spawn("streams", "streams", "worker")
            trader_env = {"MANIFEST_ED25519_PRIVATE_KEY": ""}  # verifies with the public key
            market = ["--feed", "sim", "--speed", str(speed)]
            if venue != "paper":  # the venue's simulator plays the market and fills the orders
                try:
                    sim, sim_env = start_simulator(
                        _tradeloop(), venue, env=run.env, logs=logs, bar_ms=bar_ms_for(speed)
                    )
                except VenueSimError as exc:
                    raise DemoError(str(exc)) from None
                run.children[f"venue-sim-{venue}"] = sim
                trader_env.update(sim_env)
                market = ["--venue", venue, "--feed", venue]
            run.spawn(
                "trader", "trade", *market, "--max-bars", str(bars),
                "--http-port", str(http_port), extra_env=trader_env,
            )  # fmt: skip
            _wait("the trader's /healthz", lambda: _health(http_port), 60, 0.5)
            console.print(f"  operator console: [bold]http://127.0.0.1:{http_port}/ui[/]")

        with _phase(run, "events flowing into the lake"):
            _wait(
                "outcomes in the lake",
                lambda: _lake_table(settings, "outcomes").num_rows > 0,
                max(60.0, train_after_s * 3),
            )
            remaining = train_after_s - (time.monotonic() - t_start)
            if remaining > 0:
                time.sleep(remaining)

        with _phase(run, "training round 1"):
            first = _train_round(run, settings, 1, train_args)
            if not first.get("release"):
                raise DemoError(f"training round 1 published no release: {first['output']}")

        with _phase(run, "trader hot-swaps to release 1"):
            _wait(
                f"the trader to serve {first['release']}",
                lambda: _serving_release(_health(http_port)) == first["release"],
                max(60.0, float(run.env.get("MODEL_POLL_SEC", "5")) * 4),
                0.5,
            )

        with _phase(run, "trading on release 1"):
            time.sleep(max(0.0, second_round_after_s))

        with _phase(run, "training round 2"):
            second = _train_round(run, settings, 2, train_args)
            if second.get("release"):
                _wait(
                    f"the trader to serve {second['release']}",
                    lambda: _serving_release(_health(http_port)) == second["release"],
                    60,
                    0.5,
                )

        with _phase(run, "trader finishing and the lake catching up"):
            run.health = _health(http_port)
            run.stop("trader", timeout_s=60)  # SIGTERM: close positions, drain the outbox
            sizes = asyncio.run(bus.count_records([bus.topic("signals")]))
            _wait(
                "every signal in the lake",
                lambda: _lake_table(settings, "signals").num_rows >= sizes[bus.topic("signals")],
                90,
            )
            run.stop("streams")

        summary = _summary(run, settings, bus)
        summary["venue"] = venue
        summary["elapsed_s"] = round(time.monotonic() - t_start, 1)
        return summary
    finally:
        run.close()


def _reachable(bootstrap: str, settings: Settings) -> bool:
    try:
        asyncio.run(KafkaBus(settings, bootstrap=bootstrap).check())
        return True
    except Exception:
        return False


def _summary(run: DemoRun, settings: Settings, bus: KafkaBus) -> dict[str, Any]:
    sizes = asyncio.run(bus.count_records([bus.topic(t) for t in TOPICS]))
    lake = {t: _lake_table(settings, t).num_rows for t in LAKE_TOPICS}
    outcomes = _lake_table(settings, "outcomes").to_pandas()
    per: list[dict[str, Any]] = []
    if not outcomes.empty:
        real = outcomes[~outcomes["counterfactual"].astype(bool)]
        for (symbol, strategy), grp in real.groupby(["symbol", "strategy"]):
            per.append(
                {
                    "symbol": symbol,
                    "strategy": strategy,
                    "trades": len(grp),
                    "pnl_usd": round(float(grp["pnl_usd"].sum()), 2),
                    "avg_r": round(float(grp["r_multiple"].mean()), 3),
                    "win_rate": round(float((grp["r_multiple"] > 0).mean()), 3),
                }
            )
    health = run.health
    return {
        "events_per_topic": {t: sizes.get(bus.topic(t), 0) for t in TOPICS},
        "lake_rows": lake,
        "feature_rows": lake["features"],
        "releases": [
            {
                "release": m["release"],
                "sequence": m["sequence"],
                "gate": (m.get("gate") or {}).get("decision"),
                "metrics": {a["family"]: a.get("metrics", {}) for a in m.get("artifacts", [])},
                "artifacts": {a["family"]: a["uri"] for a in m.get("artifacts", [])},
                "families": {
                    f: d.get("decision")
                    for f, d in ((m.get("gate") or {}).get("families") or {}).items()
                },
            }
            for m in run.releases
        ],
        "training_rounds": run.training_rounds,
        "swaps": (health.get("models") or {}).get("swaps"),
        "rejections": health.get("rejections"),
        "last_rejected_release": health.get("last_rejected_release"),
        "serving_release": _serving_release(health),
        "pnl_by_symbol_strategy": per,
        "lake": settings.lake,
        "store": f"s3://{settings.bucket}" if settings.uses_s3 else str(settings.store_root),
        "logs": str(run.logs),
        "phase_seconds": {k: round(v, 1) for k, v in run.timings_s.items()},
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Print the summary tables."""
    out = Console()
    events = Table(title="events per topic (Kafka) and rows in the lake")
    events.add_column("topic")
    events.add_column("kafka", justify="right")
    events.add_column("lake", justify="right")
    for topic, count in summary["events_per_topic"].items():
        events.add_row(topic, str(count), str(summary["lake_rows"].get(topic, "-")))
    out.print(events)
    rel = Table(title="releases")
    for col in ("round", "release", "gate", "metrics", "artifacts"):
        rel.add_column(col)
    by_release = {r["release"]: r for r in summary["releases"]}
    for rnd in summary["training_rounds"]:
        r = by_release.get(rnd.get("release") or "", {})
        metrics = "; ".join(
            f"{fam}: " + ", ".join(f"{k}={v:.3g}" for k, v in list(m.items())[:3])
            for fam, m in r.get("metrics", {}).items()
        )
        arts = "\n".join(f"{fam}: {uri}" for fam, uri in r.get("artifacts", {}).items())
        gate = rnd.get("gate") or "-"
        if not rnd.get("release"):
            gate = f"{gate}: " + " ".join(rnd.get("output", [])[-2:])
        rel.add_row(str(rnd["round"]), str(rnd.get("release") or "-"), gate, metrics, arts)
    out.print(rel)
    pnl = Table(title="paper trading: PnL and R per symbol and strategy (real trades)")
    for col in ("symbol", "strategy", "trades", "win rate", "avg R", "PnL $"):
        pnl.add_column(col, justify="right")
    for row in summary["pnl_by_symbol_strategy"]:
        pnl.add_row(
            row["symbol"], row["strategy"], str(row["trades"]), f"{row['win_rate']:.0%}",
            f"{row['avg_r']:+.2f}", f"{row['pnl_usd']:+,.0f}",
        )  # fmt: skip
    out.print(pnl)
    out.print(
        f"serving release: [bold]{summary['serving_release']}[/]  swaps: {summary['swaps']}  "
        f"rejections: {summary['rejections']}"
    )
    out.print(
        f"lake: {summary['lake']}\nmodels: {summary['store']}/models\nlogs: {summary['logs']}"
    )
    out.print(
        f"done in {summary['elapsed_s']}s; next: `tradeloop models list`, `tradeloop replay --into features`"
    )


@click.command()
@click.option(
    "--bars",
    default=200_000,
    show_default=True,
    help="Most sim bars the trader plays (it is stopped after round 2).",
)
@click.option("--speed", default=1800.0, show_default=True, help="Sim pacing: x wall clock.")
@click.option(
    "--train-after",
    "train_after_s",
    default=40.0,
    show_default=True,
    help="Seconds of trading before round 1.",
)
@click.option(
    "--second-round-after",
    "second_after_s",
    default=20.0,
    show_default=True,
    help="Seconds on release 1 before round 2.",
)
@click.option(
    "--synthetic-bars",
    default=20_000,
    show_default=True,
    help="Simulated bars each training round adds to the real data (the seed's synthetic source).",
)
@click.option(
    "--profile",
    type=click.Choice(["small", "standard"]),
    default="small",
    show_default=True,
    help="Training profile of the demo's rounds.",
)
@click.option(
    "--venue",
    default="paper",
    show_default=True,
    help="paper, or a venue whose simulator plays the market and fills the orders "
    "(ib, projectx, rithmic: `tradeloop venues sim NAME`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(
    bars: int,
    speed: float,
    train_after_s: float,
    second_after_s: float,
    synthetic_bars: int,
    profile: str,
    venue: str,
    as_json: bool,
) -> None:
    """Run the whole loop end to end on the embedded stack."""
    train_args = ("--synthetic-bars", str(synthetic_bars), "--profile", profile, "--no-progress")
    try:
        summary = run_demo(
            bars=bars,
            speed=speed,
            train_after_s=train_after_s,
            second_round_after_s=second_after_s,
            train_args=train_args,
            venue=venue,
        )
    except DemoError as exc:
        raise click.ClickException(
            f"demo stopped: {exc} (logs in {home_dir() / 'logs' / 'demo'})"
        ) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
