"""The cost of `OUTBOX_FSYNC=always`: one spool append with an fsync each, vs `interval`.

`run(quick)` appends the same encoded `SignalSnapshot` events (the trader's largest
common record, its feature vector included) to two fresh spools in the same temporary
directory, interleaved in blocks so both see the same disk and the same noise: one
spool fsyncs after every append (`always`, the default on live venues), the other at
most once a second (`interval`, the baseline, the default on paper). 3,000 appends
each (quick: 200). The figure depends on the disk under the temporary directory.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _event() -> bytes:
    from infra.contracts import FEATURE_NAMES, Decision, SignalSnapshot, encode

    return encode(
        SignalSnapshot(
            ts_event=datetime(2024, 3, 5, 15, 1, tzinfo=UTC),
            symbol="ES",
            strategy="orb",
            side="long",
            entry=5000.25,
            stop=4995.0,
            target=5010.75,
            feature_names=tuple(FEATURE_NAMES),
            features=tuple(0.125 * i for i in range(len(FEATURE_NAMES))),
            decision=Decision(path="rules", taken=True, reason="taken", contracts=1),
        )
    )


def run(quick: bool) -> dict[str, Any]:
    from bench.harness import summarize
    from trader.io.outbox import Outbox

    n, block = (200, 20) if quick else (3000, 100)
    value = _event()
    samples: dict[str, list[float]] = {"always": [], "interval": []}
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        spools = {p: Outbox(Path(tmp) / p, fsync=p) for p in samples}
        for _ in range(n // block):
            for policy, outbox in spools.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    outbox.append("signals", b"ES", value)
                    samples[policy].append(time.perf_counter() - t0)
        for outbox in spools.values():
            outbox.close()
    return {
        "workload": f"{n:,} appends of a {len(value)}-byte SignalSnapshot per policy, "
        f"interleaved in blocks of {block}, one temporary directory",
        "metrics": {
            "append_always": summarize(
                samples["always"], "us", scale=1e6, baseline="append_interval",
                label="outbox append, OUTBOX_FSYNC=always",
            ),
        },
        "baseline": {
            "append_interval": summarize(
                samples["interval"], "us", scale=1e6,
                label="outbox append, OUTBOX_FSYNC=interval (1 s)",
            ),
        },
        "notes": "The ratio is the price of an fsync per trader event on this disk; a trader "
        "appends a few events per bar and order, so even milliseconds stay off the "
        "decision path's budget per bar.",
    }  # fmt: skip
