"""Seek targets: after a seek, a partition delivers nothing until the record the seek went to."""

from __future__ import annotations

import pytest

from streams.seeks import SeekTargets


def test_records_fetched_before_the_seek_are_dropped_until_the_target_arrives() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 0)
    assert [targets.admit("bars", 0, o) for o in (170, 171, 172)] == [False] * 3
    assert targets.pending("bars", 0) == 0
    assert targets.admit("bars", 0, 0)  # the seek's first record
    assert all(targets.admit("bars", 0, o) for o in (1, 2, 170))  # then everything in order
    assert targets.stale_dropped == 3 and not targets


def test_other_partitions_are_not_held_back() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 5)
    assert targets.admit("bars", 1, 900)
    assert targets.admit("signals", 0, 900)
    assert not targets.admit("bars", 0, 4)  # below the target: an old fetch too
    assert targets.pending("bars", 0) == 5


def test_a_target_that_never_arrives_is_given_up_after_the_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("streams.seeks.time.monotonic", lambda: clock[0])
    targets = SeekTargets(wait_s=30)
    targets.set("bars", 0, 10)  # retention deleted 10..19 meanwhile
    assert not targets.admit("bars", 0, 20)
    clock[0] += 31
    assert targets.admit("bars", 0, 20)
    assert targets.gaps_accepted == 1 and targets.pending("bars", 0) is None


def test_a_new_seek_replaces_the_old_target() -> None:
    targets = SeekTargets(wait_s=60)
    targets.set("bars", 0, 50)
    targets.set("bars", 0, 8)
    assert not targets.admit("bars", 0, 50)
    assert targets.admit("bars", 0, 8)
