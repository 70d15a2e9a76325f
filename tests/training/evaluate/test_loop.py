"""What an evaluation refuses before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings
from training.evaluate.checkpoint import Checkpoint
from training.evaluate.loop import EvaluateError, EvaluateOptions, evaluate


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    opts = EvaluateOptions(feed="sim", symbols=("ES",), days=1)
    Checkpoint(opts.defining()).save(tmp_path / "checkpoint.json")
    with pytest.raises(EvaluateError, match="holds an evaluation already: pass --resume"):
        evaluate(Settings(), opts, tmp_path)


def test_the_walk_arguments_follow_the_options(tmp_path: Path) -> None:
    opts = EvaluateOptions(
        feed="csv:bars.csv", symbols=("6E",), allow_long_bars=True, bar_ts="open"
    )
    args = opts.walk_args(tmp_path)
    assert args[args.index("--arms") + 1] == "learning,rules,frozen"
    assert "--allow-long-bars" in args and args[args.index("--bar-ts") + 1] == "open"
    assert args[args.index("--store-dir") + 1] == str(tmp_path / "store")
    released = EvaluateOptions(feed="sim", symbols=("ES",), days=2, release="r000001")
    args = released.walk_args(tmp_path)
    assert args[args.index("--arms") + 1] == "release,rules" and "--store-dir" not in args
    assert args[args.index("--days") + 1] == "2"
