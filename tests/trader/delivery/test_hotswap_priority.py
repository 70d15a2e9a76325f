"""Background loads: sessions are built at a lower CPU priority, then it is restored."""

from __future__ import annotations

import os
import threading
from typing import Any

import onnxruntime as ort
import pytest

from tests.hotswap_support import build_blobs
from trader.delivery import models as models_mod
from trader.delivery.models import ModelSet, background_loads


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _record_nice(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    real = ort.InferenceSession

    def session(*args: Any, **kwargs: Any) -> Any:
        seen.append(_nice())
        return real(*args, **kwargs)

    monkeypatch.setattr(models_mod.ort, "InferenceSession", session)
    return seen


def test_background_loads_lower_only_the_session_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build every session at a higher nice value and leave the thread as it was."""
    seen = _record_nice(monkeypatch)
    blobs = build_blobs(0)
    result: dict[str, Any] = {}

    def load() -> None:  # a fresh thread: its priority change stays its own
        before = _nice()
        with background_loads():
            models = ModelSet.from_bytes(blobs, "v1")
            models.probe()
        result.update(before=before, after=_nice(), families=models.families)

    worker = threading.Thread(target=load)
    worker.start()
    worker.join()
    assert result["families"] == ("meta", "exec", "sizer")
    assert result["after"] == result["before"]
    if models_mod._can_raise_to(result["before"]):
        want = min(19, result["before"] + models_mod.BACKGROUND_NICE)
        assert seen == [want] * 3
    else:  # it could not be raised back: it is never lowered
        assert seen == [result["before"]] * 3


def test_loads_outside_keep_the_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build at the caller's priority when no background load is asked for."""
    seen = _record_nice(monkeypatch)
    before = _nice()
    ModelSet.from_bytes(build_blobs(0), "v1")
    assert seen == [before] * 3
    assert _nice() == before
