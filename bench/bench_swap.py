"""Hot swap under load: publish-to-first-decision time, and decision latency during swaps.

`run(quick)` starts a Tansu broker and moto's S3 server, builds two model sets with
the production IO (RandomForest meta, GradientBoosting exec, MLP sizer; the same
builders as `bench_decision`), and runs, in one asyncio loop:

- a trading task that makes one real engine decision (`Engine.decide`: features,
  three ONNX calls, sizing, risk) every `interval` on sim-feed candidates, timing
  each decision and its lateness against its schedule;
- a `HotSwapper` following the `models` topic (its own consumer group), verifying
  each release as it does in production (signature in its verification thread;
  download from S3 by version id, sha256, trial load and probe in its helper process;
  sha256, load and probe of the returned bytes back in the thread) and swapping
  between two decisions;
- a publisher that uploads and publishes signed releases, alternating the two sets.

Decisions from each publish until 50 ms after the first decision by the new
release are "during swap"; the rest (after a warm-up) are "steady". The target of
issue 6: no decision delayed beyond 2x the steady-state p99.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from infra.bus import topic_settings

HMAC_KEY = "bench-hmac-key-0123456789abcdef"
AFTER_SWAP_S = 0.05


def _bench_decision() -> Any:
    path = Path(__file__).with_name("bench_decision.py")
    spec = importlib.util.spec_from_file_location("_bench_decision_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_sets(quick: bool) -> list[dict[str, bytes]]:
    builder = _bench_decision()
    sets = []
    for seed in (0, 1):
        with tempfile.TemporaryDirectory() as tmp:
            paths = builder.build_models(tmp, small=quick, seed=seed)
            sets.append({family: Path(p).read_bytes() for family, p in paths.items()})
    return sets


def _release(settings: Any, blobs: dict[str, bytes], sequence: int) -> bytes:
    """Upload a set under models/{family}/b{sequence}/ and return the signed manifest bytes."""
    from tests.hotswap_support import release_bytes

    return release_bytes(
        settings, sequence, blobs=blobs, release=f"bench-{sequence}", version=f"b{sequence}"
    )


async def _scenario(settings: Any, sets: list[dict[str, bytes]], quick: bool) -> dict[str, Any]:
    from infra.bus import KafkaBus
    from trader.core.engine import Engine, EngineConfig
    from trader.delivery.hotswap import HotSwapper
    from trader.delivery.models import ModelHolder
    from trader.feeds.sim import SimFeed

    holder = ModelHolder()
    engine = Engine(
        settings,
        EngineConfig(symbols=("ES", "NQ"), source="sim", record_metrics=False),
        holder,
    )
    samples: list[tuple[str, list[Any]]] = []
    for bar in SimFeed(("ES", "NQ"), seed=11):
        cands = engine.evaluate_bar(bar)
        if cands:
            samples.append((bar.symbol, cands))
            if len(samples) >= 500:
                break

    releases = 3 if quick else 16
    spacing_s = 1.5 if quick else 2.0
    interval_s = 0.002
    raws = [_release(settings, sets[k % 2], k + 1) for k in range(releases + 1)]
    bus = KafkaBus(settings)
    await bus.ensure_topics(topic_settings(bus, ["models"]))
    producer = await bus.producer().start()
    # release 1 is on the topic before the trader starts: the start-up path
    await producer.send(bus.topic("models"), raws[0], key=b"default")

    swapper = HotSwapper(settings, holder, poll_sec=3600)
    stop_swapper = asyncio.Event()
    swap_task = asyncio.create_task(swapper.run(stop_swapper))
    t_start = time.perf_counter()
    await asyncio.wait_for(swapper.ready.wait(), 60)
    startup_s = time.perf_counter() - t_start
    assert holder.current.release == "bench-1", holder.current.release

    records: list[tuple[float, float, float, str]] = []  # start, end, scheduled, version
    stop = asyncio.Event()

    async def trade() -> None:
        clock = time.perf_counter
        i = 0
        next_t = clock()
        while not stop.is_set():
            # a late tick does not make the next ones late: each lateness is one decision's
            next_t = max(next_t + interval_s, clock())
            delay = next_t - clock()
            await asyncio.sleep(delay if delay > 0 else 0)
            symbol, cands = samples[i % len(samples)]
            i += 1
            t0 = clock()
            choice = engine.decide(symbol, cands).choice
            t1 = clock()
            records.append((t0, t1, next_t, choice.model_versions.get("meta", "")))

    trader = asyncio.create_task(trade())
    await asyncio.sleep(spacing_s)  # steady state first
    published: list[tuple[float, str]] = []
    for k in range(1, releases + 1):
        t_pub = time.perf_counter()
        await producer.send(bus.topic("models"), raws[k], key=b"default")
        published.append((t_pub, f"b{k + 1}"))
        await asyncio.sleep(spacing_s)
    deadline = time.perf_counter() + 30
    while swapper.swaps < releases + 1 and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    stop.set()
    await trader
    stop_swapper.set()
    await swap_task
    await producer.stop()

    firsts: list[float] = []
    windows: list[tuple[float, float]] = []
    for t_pub, version in published:
        first = next((r[1] for r in records if r[0] >= t_pub and r[3] == version), None)
        if first is None:
            continue
        firsts.append(first - t_pub)
        windows.append((t_pub, first + AFTER_SWAP_S))
    warm = records[0][0] + 0.5 if records else 0.0

    def during(r: tuple[float, float, float, str]) -> bool:
        return any(a <= r[0] <= b for a, b in windows)

    swap_rec = [r for r in records if during(r)]
    steady = [r for r in records if r[0] >= warm and not during(r)]
    # control: windows as long as the swap windows, halfway between publishes (no swap)
    controls = [(a + spacing_s / 2, a + spacing_s / 2 + (b - a)) for a, b in windows]
    control_max = [
        max(r[1] - r[0] for r in inside)
        for a, b in controls
        if (inside := [r for r in steady if a <= r[0] <= b])
    ]
    swap_max = [
        max(r[1] - r[0] for r in inside)
        for a, b in windows
        if (inside := [r for r in swap_rec if a <= r[0] <= b])
    ]
    return {
        "startup_s": startup_s,
        "firsts": firsts,
        "decide_steady": [r[1] - r[0] for r in steady],
        "decide_swap": [r[1] - r[0] for r in swap_rec],
        "window_max_swap": swap_max,
        "window_max_control": control_max,
        "late_steady": [r[1] - r[2] for r in steady],
        "late_swap": [r[1] - r[2] for r in swap_rec],
        "decisions": len(records),
        "swaps": swapper.swaps,
        "rejections": dict(swapper.rejections),
        "releases": releases,
        "interval_s": interval_s,
    }


def _verify_times(settings: Any, raw: bytes, n: int) -> list[float]:
    from infra.signing import Keyring
    from trader.delivery.release_helper import shared_helper, verify_isolated

    keyring = Keyring.from_settings(settings)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        verify_isolated(raw, 0, keyring, settings, helper=shared_helper())
        out.append(time.perf_counter() - t0)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the hot swap under a steady stream of decisions; return the bench schema."""
    from bench.harness import summarize
    from infra.settings import Settings
    from infra.stack import start_moto, start_tansu

    home = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    os.environ["TRADELOOP_HOME"] = str(home)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    sets = _model_sets(quick)
    sizes = {f: len(b) for f, b in sets[0].items()}
    kafka = start_tansu(log_dir=home)
    s3 = start_moto(log_dir=home, bucket="bench-swap")
    try:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            KAFKA_BOOTSTRAP_SERVERS=kafka.address,
            TOPIC_PREFIX=f"b{uuid.uuid4().hex[:8]}.",
            S3_ENDPOINT_URL=s3.address,
            S3_BUCKET="bench-swap",
            MANIFEST_HMAC_KEY=HMAC_KEY,
            KAFKA_SESSION_TIMEOUT_MS=6000,
        )
        res = asyncio.run(_scenario(settings, sets, quick))
        verify = _verify_times(settings, _release(settings, sets[0], 999), 3 if quick else 10)
    finally:
        kafka.stop()
        s3.stop()
    steady = summarize(res["decide_steady"], "us", scale=1e6, label="decision, steady state")
    swap = summarize(
        res["decide_swap"],
        "us",
        scale=1e6,
        baseline="decide_steady",
        label="decision, during a swap",
    )
    late_steady = summarize(res["late_steady"], "us", scale=1e6, label="lateness, steady")
    late_swap = summarize(
        res["late_swap"],
        "us",
        scale=1e6,
        baseline="late_steady",
        label="lateness vs schedule, during a swap",
    )
    worst = {
        "value": swap["max"],
        "unit": "us",
        "baseline": "decide_steady",
        "label": "slowest decision during any swap",
    }
    window_swap = summarize(
        res["window_max_swap"],
        "us",
        scale=1e6,
        baseline="window_max_control",
        label="slowest decision per swap window",
    )
    window_control = summarize(
        res["window_max_control"],
        "us",
        scale=1e6,
        label="slowest decision per window of the same length without a swap",
    )
    return {
        "workload": (
            f"{res['releases']} signed releases hot-swapped (meta RF, exec GB, sizer MLP; "
            f"{sum(sizes.values()) / 1024:.0f} KiB per set) from Tansu + moto S3 while the "
            f"engine decides every {res['interval_s'] * 1e3:.0f} ms on sim candidates; "
            f"{res['decisions']} decisions"
        ),
        "metrics": {
            "publish_to_first_decision": summarize(
                res["firsts"], "ms", scale=1e3, label="manifest published -> first decision by it"
            ),
            "verify_release": summarize(
                verify,
                "ms",
                scale=1e3,
                label="verify + download + load + probe (helper process, then the trader)",
            ),
            "decide_during_swap": swap,
            "decide_worst_during_swap": worst,
            "window_max_during_swap": window_swap,
            "lateness_during_swap": late_swap,
            "startup_to_first_release": {
                "value": res["startup_s"] * 1e3,
                "unit": "ms",
                "label": "swapper start -> release 1 serving (group join, read topic, load)",
            },
        },
        "baseline": {
            "decide_steady": steady,
            "late_steady": late_steady,
            "window_max_control": window_control,
        },
        "ratios": {
            "decide_during_swap": {
                "vs": "decide_steady",
                "stat": "p99",
                "value": swap["p99"] / steady["p99"],
            },
            "decide_worst_during_swap": {
                "vs": "decide_steady",
                "stat": "max / steady p99",
                "value": swap["max"] / steady["p99"],
            },
            "window_max_during_swap": {
                "vs": "window_max_control",
                "stat": "median",
                "value": window_swap["median"] / window_control["median"],
            },
            "lateness_during_swap": {
                "vs": "late_steady",
                "stat": "p99",
                "value": late_swap["p99"] / late_steady["p99"],
            },
        },
        "targets": {
            "decide_during_swap": {"stat": "p99", "op": "<=", "ratio": 2.0},
            "decide_worst_during_swap": {"stat": "value", "op": "<=", "ratio": 2.0},
        },
        "notes": (
            f"swaps {res['swaps']} (incl. start-up), rejections {res['rejections'] or 'none'}; "
            f"'during a swap' = from publish until {AFTER_SWAP_S * 1e3:.0f} ms after the first "
            "decision by the new release; lateness = decision end minus its scheduled time "
            "(event-loop blocking shows here); the slowest decision per swap window is compared "
            "with the slowest decision in windows of the same lengths halfway between publishes, "
            f"where no swap runs (steady-state maximum: {steady['max']:,.0f} us). "
            "Model sizes (bytes): " + ", ".join(f"{k} {v}" for k, v in sizes.items())
        ),
    }


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
