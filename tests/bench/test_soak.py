"""One short soak run (the whole loop under the seed's faults) and the soak's bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import (
    DURABLE_FAULTS,
    FAULTS,
    SoakResult,
    replace_section,
    run_once,
    schedule,
    soak_markdown,
    soak_section,
)


def test_schedule_is_drawn_from_the_seed() -> None:
    one = schedule(11, 600)
    assert one == schedule(11, 600) and one != schedule(12, 600)
    assert {f for _, f, _ in one} <= set(FAULTS)
    assert "restart_broker" in {f for _, f, _ in schedule(11, 600, DURABLE_FAULTS)}
    assert all(1.0 <= hold <= 5.0 for _, _, hold in one)
    assert [at for at, _, _ in one] == sorted(at for at, _, _ in one)


def test_the_soak_section_is_replaced_and_kept() -> None:
    text = "# Results\n\n## Memory\n\nx\n\n## Soak\n\nold\n\n## Notes\n\nn\n"
    section = soak_markdown([SoakResult(seed=3, faults={"kill_worker": 2}, events=10)], 1, 3)
    new = replace_section(text, section)
    assert "old" not in new and "## Notes\n\nn\n" in new and "## Memory\n\nx\n" in new
    assert soak_section(new) == section
    assert "| 1 | 1 | 3..3 | 2 | 10 | 0 | 0 | 0 | 0 | 0 |" in section
    assert replace_section("# R\n", section).endswith(section)
    assert soak_section("# R\n") == ""


@pytest.mark.slow
@pytest.mark.timeout(600)  # five processes start and stop; on a loaded two-core box that is minutes
def test_a_short_soak_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    # seed 28 over 18 s: kill -9 of the worker, Redis silent, S3 refusing, kill -9 of the trader
    result = run_once(0.3, 28, tmp_path)
    assert result.faults == {
        "kill_worker": 1,
        "redis_blackhole": 1,
        "s3_refuse": 1,
        "kill_trader": 1,
    }, result
    assert result.events > 100, result
    assert result.clean, result
