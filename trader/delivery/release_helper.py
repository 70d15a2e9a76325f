"""Download and check release artifacts in a helper process, away from the decision loop.

Fetching a release is Python-heavy (boto3, XML, retries) and, in the trader's own
process, competes with decisions for the GIL. `ReleaseHelper` runs that part in one
long-lived helper process (spawned, at a lower CPU priority): the download, the size
and sha256 checks, a trial load and the probes. The trader keeps every check that
decides what it serves (`verify_isolated`):

1. it verifies the manifest itself (`check_manifest`: signature, model set, sequence,
   feature contract) before the helper is asked for anything;
2. it hashes the bytes the helper hands back against that verified manifest
   (`check_blobs`), so the helper is never trusted for integrity;
3. it loads and probes those very bytes (`load_checked`), which also warms the new
   sessions before they serve.

`verify_off_loop` runs all of it in one dedicated verification thread with a short GIL
switch interval, so a decision wins the GIL back quickly. (The thread keeps the
trader's CPU priority while it runs Python: a low-priority thread that holds the GIL
can keep a decision waiting while it is not scheduled. Only the native session builds,
which run without the GIL, are lowered: `trader.delivery.priority`.)

If the helper cannot be started, the release is fetched in the verification thread
instead. If it dies while checking a release (a crash in a native library), one fresh
helper tries again; a second death is an error, and the trader's process never loads
those bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any
from urllib.parse import urlparse

from infra.contracts import ModelManifest
from infra.objectstore import s3_client
from infra.settings import Settings
from infra.signing import Keyring
from trader.delivery.models import ModelSet
from trader.delivery.priority import background_loads, helper_nice, lower_this_process
from trader.delivery.release import (
    AcceptedRelease,
    ReleaseRejected,
    check_blobs,
    check_manifest,
    fetch_blobs,
    load_checked,
    verify_release,
)

__all__ = [
    "FETCH_TIMEOUT_S",
    "VERIFY_SWITCH_INTERVAL_S",
    "HelperCrashed",
    "HelperUnavailable",
    "ReleaseHelper",
    "shared_helper",
    "verify_isolated",
    "verify_off_loop",
]

log = logging.getLogger(__name__)

#: Longest wait for the helper to fetch and check one release.
FETCH_TIMEOUT_S = 300.0
#: The GIL switch interval while a release is verified (restored after).
VERIFY_SWITCH_INTERVAL_S = 0.0005


class HelperUnavailable(RuntimeError):
    """Raise when the helper process cannot be started (the caller fetches in-process)."""


class HelperCrashed(RuntimeError):
    """Raise when the helper died (twice) or timed out while checking a release."""


# the helper process --------------------------------------------------------------

_client: tuple[Settings, Any] | None = None


def _child_init(nice: int) -> None:
    # Ctrl-C is the trader's to handle; the helper exits when the trader closes its pipe,
    # and when the trader dies without closing it (kill -9): a watchdog sees the new parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_this_process(nice)
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True
    ).start()


def _exit_with_parent(parent: int, interval_s: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(0)


def _child_client(settings: Settings) -> Any:
    """Return a boto3 client for `settings`, reused across releases (building one is slow)."""
    global _client
    if _client is None or _client[0] != settings:
        _client = (settings, s3_client(settings))
    return _client[1]


def _needs_s3(manifest: ModelManifest, settings: Settings) -> bool:
    for art in manifest.artifacts:
        parsed = urlparse(art.uri)
        if parsed.scheme == "s3":
            return True
        if parsed.scheme in ("", "file") and not parsed.path.startswith("/") and settings.uses_s3:
            return True
    return False


def _child_warm(settings: Settings | None) -> bool:
    """Pay the one-off costs (imports, an S3 client) before the first release."""
    if settings is not None and settings.uses_s3:
        _child_client(settings)
    return True


def _child_fetch(manifest: ModelManifest, settings: Settings) -> tuple[str, Any]:
    """Fetch, check, load and probe in the helper; return ("ok", blobs) or ("rejected", ...)."""
    client = None
    if _needs_s3(manifest, settings):
        with contextlib.suppress(Exception):  # no client: the download names the error
            client = _child_client(settings)
    try:
        blobs = fetch_blobs(manifest, settings, client=client)
        load_checked(manifest, blobs)  # the sessions are dropped: this only checks
    except ReleaseRejected as rej:
        return "rejected", (rej.code, rej.detail)
    return "ok", blobs


# the trader's side ---------------------------------------------------------------


class ReleaseHelper:
    """One helper process that fetches and checks releases; started on first use."""

    def __init__(self, *, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def start(self, settings: Settings | None = None) -> None:
        """Start the helper and warm it for `settings`; do not wait for it."""
        with contextlib.suppress(HelperUnavailable):
            self._submit(_child_warm, settings)

    def fetch(self, manifest: ModelManifest, settings: Settings) -> dict[str, bytes]:
        """Download and check a verified manifest's artifacts in the helper; return them.

        Raise `ReleaseRejected` with the helper's code, `HelperUnavailable` when no
        helper can be started, or `HelperCrashed`.
        """
        for attempt in (1, 2):
            future = self._submit(_child_fetch, manifest, settings)
            try:
                status, payload = future.result(timeout=self.timeout_s)
            except BrokenProcessPool:
                self._discard(kill=False)
                if attempt == 1:
                    log.warning("release helper died checking %s; retrying", manifest.release)
                    continue
                raise HelperCrashed(
                    f"the release helper died twice checking {manifest.release}"
                ) from None
            except FutureTimeout:
                self._discard(kill=True)
                raise HelperCrashed(
                    f"the release helper took over {self.timeout_s:.0f}s on {manifest.release}"
                ) from None
            if status == "rejected":
                code, detail = payload
                raise ReleaseRejected(
                    code, detail, release=manifest.release, sequence=manifest.sequence
                )
            return dict(payload)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop the helper process (a later `fetch` starts a new one)."""
        self._discard(kill=False)

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        with self._lock:
            for _ in range(2):
                try:
                    if self._pool is None:
                        self._pool = ProcessPoolExecutor(
                            max_workers=1,
                            mp_context=multiprocessing.get_context("spawn"),
                            initializer=_child_init,
                            initargs=(helper_nice(),),
                        )
                    return self._pool.submit(fn, *args)
                except BrokenProcessPool:  # it died since the last call: start a new one
                    pool, self._pool = self._pool, None
                    if pool is not None:
                        pool.shutdown(wait=False, cancel_futures=True)
                except (OSError, RuntimeError, ValueError) as exc:
                    self._pool = None
                    raise HelperUnavailable(f"the release helper could not start: {exc}") from None
        raise HelperUnavailable("the release helper could not start")

    def _discard(self, *, kill: bool) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:  # a hung download: the pool cannot cancel a running call
            for proc in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)


_SHARED = ReleaseHelper()


def shared_helper() -> ReleaseHelper:
    """Return the process-wide helper (every `HotSwapper` of a process shares one)."""
    return _SHARED


def verify_isolated(
    raw: bytes,
    serving_sequence: int,
    keyring: Keyring,
    settings: Settings,
    *,
    model_set: str | None = None,
    helper: ReleaseHelper | None = None,
    last: AcceptedRelease | None = None,
) -> tuple[ModelManifest, ModelSet]:
    """Do what `verify_release` does, with the download and first checks in the helper.

    Same rejection codes, in the same order. Blocking: run it in a worker thread.
    """
    manifest = check_manifest(
        raw, serving_sequence, keyring, model_set=model_set, settings=settings, last=last
    )
    try:
        blobs = (helper or _SHARED).fetch(manifest, settings)
    except HelperUnavailable as exc:
        log.warning("%s; fetching %s in the trader's process", exc, manifest.release)
        blobs = fetch_blobs(manifest, settings)
    check_blobs(manifest, blobs)
    return manifest, load_checked(manifest, blobs)


_verify_thread: ThreadPoolExecutor | None = None
_verify_thread_lock = threading.Lock()


def _verification_thread() -> ThreadPoolExecutor:
    global _verify_thread
    with _verify_thread_lock:
        if _verify_thread is None:
            _verify_thread = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="models-verify",
            )
        return _verify_thread


def _verify_yielding(
    raw: bytes,
    serving_sequence: int,
    keyring: Keyring,
    settings: Settings,
    *,
    model_set: str | None,
    helper: ReleaseHelper | None,
    last: AcceptedRelease | None,
) -> tuple[ModelManifest, ModelSet]:
    """Verify with a short GIL switch interval, restored after.

    Each ONNX call of a decision releases the GIL and must win it back from this
    thread (pydantic, JSON and session set-up hold it in bursts); with the default
    5 ms interval a decision can wait several intervals.
    """
    old = sys.getswitchinterval()
    sys.setswitchinterval(min(old, VERIFY_SWITCH_INTERVAL_S))
    try:
        with background_loads():
            if helper is None:
                return verify_release(
                    raw, serving_sequence, keyring, settings, model_set=model_set, last=last
                )
            return verify_isolated(
                raw,
                serving_sequence,
                keyring,
                settings,
                model_set=model_set,
                helper=helper,
                last=last,
            )
    finally:
        sys.setswitchinterval(old)


async def verify_off_loop(
    raw: bytes,
    serving_sequence: int,
    keyring: Keyring,
    settings: Settings,
    *,
    model_set: str | None = None,
    helper: ReleaseHelper | None = None,
    last: AcceptedRelease | None = None,
) -> tuple[ModelManifest, ModelSet]:
    """Verify a release in the verification thread; return the manifest and the models.

    With a `helper`, as `verify_isolated`; without, all of `verify_release` in the thread.
    Releases are verified one at a time. Raise `ReleaseRejected` like `verify_release`.
    """
    call = functools.partial(
        _verify_yielding,
        raw,
        serving_sequence,
        keyring,
        settings,
        model_set=model_set,
        helper=helper,
        last=last,
    )
    return await asyncio.get_running_loop().run_in_executor(_verification_thread(), call)
