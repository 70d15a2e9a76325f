"""CPU priority of release work: lowered session builds and the helper process's nice value.

Two things run below the trader's priority so a release never competes with decisions:

- the native ONNX session builds of a background load (`background_loads()` marks the
  thread; `lowered()` drops it by `BACKGROUND_NICE` around one build and puts it back);
- the release helper process (`helper_nice()` is the value its initializer applies with
  `lower_this_process`).

A thread is lowered only where it can be raised back (`can_raise_to`): root, or an
`RLIMIT_NICE` that allows the thread's own value. Elsewhere it keeps its priority, since
a thread stuck low would hold the GIL at that priority for the rest of its life.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from collections.abc import Iterator

__all__ = [
    "BACKGROUND_NICE",
    "HELPER_NICE",
    "MAX_NICE",
    "background_loads",
    "can_raise_to",
    "helper_nice",
    "lower_this_process",
    "lowered",
    "raise_allowed",
    "thread_nice",
]

#: How much lower a background load builds its sessions at (`nice` increment).
BACKGROUND_NICE = 10
#: How much lower the helper's CPU priority is than the trader's (`nice` increment).
HELPER_NICE = 10
#: The lowest priority Linux has (the highest nice value).
MAX_NICE = 19

_background = threading.local()


def thread_nice() -> int:
    """Return the calling thread's nice value (on Linux each thread has its own)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def raise_allowed(nice: int, *, euid: int, nice_limit: int) -> bool:
    """Say whether a process with `euid` and RLIMIT_NICE soft limit `nice_limit` may set `nice`.

    Root may set any value; otherwise the limit allows nice values down to `20 - limit`.
    """
    return euid == 0 or nice_limit == resource.RLIM_INFINITY or 20 - nice_limit <= nice


def can_raise_to(nice: int) -> bool:
    """Say whether this process may set a thread's nice value back to `nice`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return raise_allowed(nice, euid=os.geteuid(), nice_limit=soft)


@contextlib.contextmanager
def background_loads() -> Iterator[None]:
    """Build sessions in this thread at a lower CPU priority while onnxruntime works.

    Only the native session build (which runs without the GIL) is lowered; the thread
    is back at its own priority before it runs Python again, so it never holds the
    GIL at the low priority for longer than one system call.
    """
    old = getattr(_background, "on", False)
    _background.on = True
    try:
        yield
    finally:
        _background.on = old


@contextlib.contextmanager
def lowered() -> Iterator[None]:
    """Run the block `BACKGROUND_NICE` lower when in `background_loads()` and restorable."""
    tid: int | None = None
    nice = 0
    if getattr(_background, "on", False):
        try:
            tid = threading.get_native_id()
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            if can_raise_to(nice):
                os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, nice + BACKGROUND_NICE))
            else:  # it would stay low: build at the thread's priority
                tid = None
        except OSError:  # not Linux, or not allowed: build at the thread's priority
            tid = None
    try:
        yield
    finally:
        if tid is not None:
            with contextlib.suppress(OSError):  # raising it back to its own value is allowed
                os.setpriority(os.PRIO_PROCESS, tid, nice)


def helper_nice() -> int:
    """Return the nice value for the release helper: the main thread's plus `HELPER_NICE`."""
    return min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, os.getpid()) + HELPER_NICE)


def lower_this_process(nice: int) -> None:
    """Set this process's nice value to `nice` where allowed (else leave it)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
