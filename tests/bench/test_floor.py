"""`python -m bench.floor`: the three models alone, fixed work and clock gaps."""

from __future__ import annotations

import json

import pytest

from bench import floor


def test_floor_times_each_model_the_three_together_and_fixed_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    floor.main(["--rounds", "40", "--small"])
    out = json.loads(capsys.readouterr().out)
    models = out["models_alone"]
    assert set(models) == {"meta", "exec", "sizer", "all3"}
    for timing in (*models.values(), out["fixed_work"]):
        for clock in ("wall", "cpu"):
            assert 0 < timing[clock]["median_us"] <= timing[clock]["p99_us"]
    # three calls in a row cost more than the slowest of them alone
    slowest = max(models[k]["wall"]["median_us"] for k in ("meta", "exec", "sizer"))
    assert models["all3"]["wall"]["median_us"] > slowest
    assert out["clock_gaps"]["seconds"] == 1.0 and out["clock_gaps"]["gaps"] >= 0


def test_clock_gaps_sees_the_gil_taken_by_another_thread() -> None:
    import threading
    import time

    def spin() -> None:  # pure Python: the interpreter hands the GIL over every 5 ms
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass

    t = threading.Thread(target=spin)
    t.start()
    gaps = floor.clock_gaps(seconds=0.2, gap_ns=1_000_000)
    t.join()
    assert gaps["gaps"] >= 2 and gaps["longest_us"] >= 1_000
    assert gaps["lost_us"] >= gaps["longest_us"]
