"""CPU priority of release work (trader/delivery/priority.py) as it behaves on this machine.

The tests run as root, where a thread lowered by `BACKGROUND_NICE` can be set back to
its own value: every background session build must then run lowered and the thread
must be back at its own priority before it runs Python again. The branch for a machine
that could not raise a thread back is forced through `priority.can_raise_to`.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, TypeVar

import onnxruntime as ort
import pytest

from tests.hotswap_support import build_blobs
from trader.delivery import models as models_mod
from trader.delivery import priority
from trader.delivery.models import ModelSet
from trader.delivery.priority import BACKGROUND_NICE, HELPER_NICE, background_loads
from trader.delivery.release_helper import ReleaseHelper

T = TypeVar("T")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run `fn` in a new thread (its priority changes stay its own); return or re-raise."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test's thread
            box["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


@pytest.fixture
def build_nice(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the thread's nice value at each onnxruntime session build of `models`."""
    seen: list[int] = []

    def session(*args: Any, **kwargs: Any) -> ort.InferenceSession:
        seen.append(_nice())
        return ort.InferenceSession(*args, **kwargs)

    # models' own name for onnxruntime, pointing at the real library but for the recording
    monkeypatch.setattr(
        models_mod, "ort", SimpleNamespace(**{**vars(ort), "InferenceSession": session})
    )
    return seen


def _background_load() -> dict[str, Any]:
    before = _nice()
    with background_loads():
        models = ModelSet.from_bytes(build_blobs(0), "v1")
        between = _nice()  # after the builds, still inside the background load
        models.probe()
    return {"before": before, "between": between, "after": _nice(), "families": models.families}


def test_this_machine_can_set_a_lowered_thread_back() -> None:
    """Check what the system calls do here: lower a thread by 10, set it back, read it."""

    def probe() -> tuple[int, int, int]:
        tid = threading.get_native_id()
        own = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, own + BACKGROUND_NICE)
        low = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, own)  # raises PermissionError where not allowed
        return own, low, os.getpriority(os.PRIO_PROCESS, tid)

    own, low, back = _in_fresh_thread(probe)
    assert own + BACKGROUND_NICE <= priority.MAX_NICE, "the tests need room to lower a thread"
    assert (low, back) == (own + BACKGROUND_NICE, own)
    assert priority.can_raise_to(own) is True
    assert _nice() == own  # the test's own thread was never touched


def test_background_builds_run_lowered_and_the_thread_is_restored(build_nice: list[int]) -> None:
    """Build every session `BACKGROUND_NICE` lower; run Python at the thread's own priority."""
    result = _in_fresh_thread(_background_load)
    own = result["before"]
    assert result["families"] == ("meta", "exec", "sizer")
    assert build_nice == [own + BACKGROUND_NICE] * 3
    assert result["between"] == own
    assert result["after"] == own


def test_a_thread_that_could_not_be_set_back_is_never_lowered(
    build_nice: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Build at the thread's own priority where it could not be raised back afterwards."""
    asked: list[int] = []

    def cannot(nice: int) -> bool:
        asked.append(nice)
        return False

    monkeypatch.setattr(priority, "can_raise_to", cannot)
    result = _in_fresh_thread(_background_load)
    own = result["before"]
    assert result["families"] == ("meta", "exec", "sizer")
    assert asked == [own] * 3  # asked once per build, about the thread's own value
    assert build_nice == [own] * 3
    assert result["after"] == own


def test_loads_outside_keep_the_priority(build_nice: list[int]) -> None:
    """Build at the caller's priority when no background load is asked for."""
    before = _nice()
    ModelSet.from_bytes(build_blobs(0), "v1")
    assert build_nice == [before] * 3
    assert _nice() == before


def test_who_may_raise_a_nice_value_back() -> None:
    """Root may set any value; otherwise RLIMIT_NICE allows values down to 20 - limit."""
    allowed = priority.raise_allowed
    assert allowed(-20, euid=0, nice_limit=0)
    assert allowed(-20, euid=1000, nice_limit=resource.RLIM_INFINITY)
    assert not allowed(19, euid=1000, nice_limit=0)  # the usual limit: never back up
    assert allowed(0, euid=1000, nice_limit=20)
    assert not allowed(-1, euid=1000, nice_limit=20)
    assert allowed(-20, euid=1000, nice_limit=40)
    assert allowed(5, euid=1000, nice_limit=15) and not allowed(4, euid=1000, nice_limit=15)


@pytest.fixture
def own_helper() -> Iterator[ReleaseHelper]:
    """A release helper process of the test's own, stopped after."""
    helper = ReleaseHelper(timeout_s=120.0)
    yield helper
    helper.close()


def test_the_release_helper_runs_helper_nice_below_the_trader(own_helper: ReleaseHelper) -> None:
    """Start the helper at the main thread's nice value plus `HELPER_NICE`."""
    main = os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert priority.helper_nice() == min(priority.MAX_NICE, main + HELPER_NICE)
    future = own_helper._submit(os.getpriority, os.PRIO_PROCESS, 0)
    assert future.result(timeout=120) == min(priority.MAX_NICE, main + HELPER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == main
