"""The model hot swap: follow the `models` topic and `latest.json`, verify, swap.

`HotSwapper.run()` is a long-running task beside the decision loop:

- It consumes the compacted `models` topic with a consumer group of its own (unique
  per trader instance and connection). On every (re)connect it reads the topic to its
  end and tries the newest release first; when the topic holds none for this model
  set it reads `models/manifest/latest.json` from the object store.
- It polls `latest.json` every `MODEL_POLL_SEC` as a fallback (also while Kafka is down).
- Every release is verified off the event loop (`trader.delivery.release_helper.verify_off_loop`):
  the manifest checks in a verification thread, the download and a trial load in a
  low-priority helper process, then the sha256 of the returned bytes, the load (its
  native session builds lowered, `trader.delivery.priority`) and the probe back in the
  thread. Nothing of it runs on the decision path. An accepted release replaces the
  serving set with one `ModelHolder.swap` on the event loop, between two decisions,
  or goes on trial through the `ModelRouter` when a canary mode is set; the swapper
  subscribes to the router (`ModelRouter.subscribe`) to hear how each trial ends.
- A rejected release changes nothing: it is counted by code, logged without secrets,
  kept as `last_rejection` and shown by `status()` (for `/healthz`) and Prometheus.
- Nothing raises out of the loop: errors are counted, logged and retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import Counter as CountMap
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from infra.bus import BusConsumer, KafkaBus, topic_settings
from infra.contracts import ModelManifest
from infra.crash import CrashPoint, crash_point
from infra.objectstore import ObjectNotFoundError, object_store
from infra.offsets import read_to_end
from infra.settings import Settings, stack_state
from infra.signing import Keyring
from trader import metrics
from trader.delivery.canary import ModelRouter
from trader.delivery.models import ModelHolder, ModelSet
from trader.delivery.release import (
    LATEST_MANIFEST_KEY,
    TRANSIENT_CODES,
    ReleaseRejected,
    describe_keyring,
    peek_sequence,
)
from trader.delivery.release_helper import ReleaseHelper, shared_helper, verify_off_loop
from trader.delivery.replay import AcceptedRelease, ReleaseLedger

__all__ = ["STARTUP_WAIT_S", "HotSwapper", "SwapMetrics", "kafka_configured"]

log = logging.getLogger(__name__)

#: How long `tradeloop trade` waits for the start-up release before trading without one.
STARTUP_WAIT_S = 30.0
_SEEN_MAX = 512
#: The most of `latest.json` read (a manifest is a few kB; the rest is an attack).
_MANIFEST_MAX_BYTES = 4 * 1024 * 1024
_BACKOFF_MAX_S = 30.0


class SwapMetrics:
    """The hot swap's Prometheus series: those of `trader.metrics`, on its registry."""

    swaps: Any = metrics.MODEL_SWAPS
    rejections: Any = metrics.MODEL_REJECTIONS
    loop_errors: Any = metrics.MODEL_SWAP_ERRORS

    def set_release(self, release: str) -> None:
        """Show the serving release on `tradeloop_model_release_info`."""
        metrics.set_release(release)

    def bind_age(self, holder: ModelHolder) -> None:
        """Make `tradeloop_model_age_seconds` read the serving set at scrape time."""
        metrics.MODEL_AGE.set_function(lambda: holder.current.age_s())


def kafka_configured(settings: Settings) -> bool:
    """Say whether a broker is configured: KAFKA_BOOTSTRAP_SERVERS or the embedded stack."""
    kafka = stack_state().get("kafka") or {}
    return bool(settings.kafka_bootstrap_servers or kafka.get("bootstrap"))


def _default_group(settings: Settings) -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return f"{settings.topic_prefix}trader-models-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class HotSwapper:
    """Follow releases, verify them off the decision path and swap (or put on trial)."""

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        *,
        router: ModelRouter | None = None,
        keyring: Keyring | None = None,
        model_set: str = "default",
        use_kafka: bool = True,
        group_id: str | None = None,
        poll_sec: float | None = None,
        metrics: SwapMetrics | None = None,
        helper: ReleaseHelper | None = None,
        isolate: bool = True,
        ledger: ReleaseLedger | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.router = router
        self.keyring = keyring if keyring is not None else Keyring.for_trader(settings)
        self.model_set = model_set
        #: The highest release accepted per model set, on disk (anti-replay, chain link).
        self.ledger = ledger if ledger is not None else ReleaseLedger(settings.release_state_file)
        self.use_kafka = use_kafka
        self.group_base = group_id or _default_group(settings)
        self.poll_sec = poll_sec if poll_sec is not None else settings.model_poll_sec
        self.metrics = metrics if metrics is not None else SwapMetrics()
        #: The helper process that fetches releases; None: fetch in the worker thread.
        self.helper = (helper or shared_helper()) if isolate else None
        self.bus = KafkaBus(settings)
        self.topic = self.bus.topic("models")
        #: The highest sequence accepted (serving, or on trial as the challenger).
        self.serving_sequence = 0
        self.serving_manifest: ModelManifest | None = None
        self.challenger_manifest: ModelManifest | None = None
        self.swaps = 0
        self.rejections: CountMap[str] = CountMap()
        self.loop_errors: CountMap[str] = CountMap()
        self.last_swap: dict[str, Any] | None = None
        self.last_rejection: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.last_poll_at: datetime | None = None
        self.kafka_connected = False
        self.ready = asyncio.Event()  # set once the start-up read is done
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._lock = asyncio.Lock()
        self._connections = 0
        self.metrics.set_release(holder.current.release)
        self.metrics.bind_age(holder)
        if router is not None:  # hears of the trials it starts ending (a `TrialListener`)
            router.subscribe(self)

    # the loops -------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow releases until `stop` is set (or the task is cancelled); never raises."""
        stop = stop or asyncio.Event()
        if self.helper is not None:  # spawn and warm it while the topic is read
            await asyncio.to_thread(self.helper.start, self.settings)
        tasks = [asyncio.create_task(self._poll_loop(stop), name="models-poll")]
        if self.use_kafka:
            tasks.append(asyncio.create_task(self._kafka_loop(stop), name="models-topic"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _kafka_loop(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        consumer: BusConsumer | None = None
        try:
            while not stop.is_set():
                try:
                    if consumer is None:
                        consumer = await self._connect()
                        await self._catch_up(consumer)
                        backoff = 1.0
                    for rec in await consumer.poll(timeout_ms=500):
                        if self._ours(rec.key, rec.value):
                            await self.apply(
                                rec.value or b"", source=f"topic@{rec.partition}:{rec.offset}"
                            )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._error("kafka", exc)
                    self.kafka_connected = False
                    if consumer is not None:
                        with contextlib.suppress(Exception):
                            await consumer.stop()
                        consumer = None
                    if not self.ready.is_set():  # the broker is down at start: use latest.json
                        await self._safe_poll()
                        self.ready.set()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            self.kafka_connected = False

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        if not self.use_kafka:
            await self._safe_poll()
            self.ready.set()
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll_sec)
            if stop.is_set():
                return
            await self._safe_poll()

    async def _safe_poll(self) -> None:
        try:
            await self.poll_latest()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error("latest_json", exc)

    async def _connect(self) -> BusConsumer:
        await self.bus.ensure_topics(topic_settings(self.bus, ["models"]))
        self._connections += 1
        group = f"{self.group_base}-{self._connections}"
        consumer = self.bus.consumer([self.topic], group, from_beginning=True)
        await consumer.start()
        self.kafka_connected = True
        log.info("hot swap: following %s as group %s", self.topic, group)
        return consumer

    async def _catch_up(self, consumer: BusConsumer) -> None:
        """Read the topic to its end; apply the newest valid release (else latest.json)."""
        timeout_s = max(30.0, 3 * self.settings.kafka_session_timeout_ms / 1000)
        deadline = time.monotonic() + timeout_s
        raw = consumer.raw
        while not raw.assignment():
            await consumer.poll(timeout_ms=300)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no assignment of {self.topic} within {timeout_s:.0f}s")
        # ListOffsets answers short on Tansu: read to the fetched end (infra.offsets).
        records: list[Any] = []
        ends = await read_to_end(
            self.bus, sorted(raw.assignment()), records.extend, timeout_s=timeout_s
        )
        for tp, end in ends.items():
            raw.seek(tp, end)  # follow from the end read to
        ours = [r for r in records if self._ours(r.key, r.value)]
        ours.sort(key=lambda r: (peek_sequence(r.value or b""), r.offset), reverse=True)
        accepted = False
        for rec in ours:
            if peek_sequence(rec.value or b"") <= self.serving_sequence:
                break  # older than what serves: nothing to gain, nothing to count
            outcome = await self.apply(
                rec.value or b"", source=f"topic@{rec.partition}:{rec.offset}", initial=True
            )
            if outcome in ("swapped", "challenger"):
                accepted = True
                break
        if not accepted:
            await self._safe_poll()
        self.ready.set()

    def _ours(self, key: bytes | None, value: bytes | None) -> bool:
        if not value:
            return False  # a tombstone on the compacted topic
        return key is None or key == self.model_set.encode()

    # one release -----------------------------------------------------------

    async def poll_latest(self) -> str | None:
        """Read `latest.json` and apply it; return the outcome, or None when absent."""
        self.last_poll_at = datetime.now(UTC)
        try:
            raw = await asyncio.to_thread(self._read_latest)
        except ObjectNotFoundError:
            return None
        return await self.apply(raw, source="latest.json")

    def _read_latest(self) -> bytes:
        return object_store(self.settings).get(LATEST_MANIFEST_KEY, max_bytes=_MANIFEST_MAX_BYTES)

    async def apply(self, raw: bytes, *, source: str, initial: bool = False) -> str:
        """Verify a release and swap to it (or put it on trial); never raises.

        Return `swapped`, `challenger`, `rejected` or `duplicate` (bytes rejected before
        for good, or the release serving now). Accepted bytes are not remembered: a
        replay of an older release is verified again and counted as `stale_sequence`.
        """
        digest = hashlib.sha256(raw).hexdigest()
        async with self._lock:
            if digest in self._seen:
                return "duplicate"
            first = self.serving_sequence == 0 or initial
            try:
                manifest, models = await verify_off_loop(
                    raw,
                    self.serving_sequence,
                    self.keyring,
                    self.settings,
                    model_set=self.model_set,
                    helper=self.helper,
                    last=self.ledger.get(self.model_set),
                )
            except ReleaseRejected as rej:
                if self._is_serving(rej):  # e.g. latest.json naming the serving release
                    return "duplicate"
                self._reject(rej, source)
                if rej.code not in TRANSIENT_CODES:
                    self._remember(digest, rej.code)
                return "rejected"
            except Exception as exc:  # a bug or an environment failure: count, keep serving
                self._error("verify", exc)
                return "rejected"
            crash_point(CrashPoint.HOTSWAP_AFTER_VERIFY_BEFORE_SWAP)
            try:  # durable before it serves: a crash now cannot reopen a replay window
                await asyncio.to_thread(
                    self.ledger.record,
                    self.model_set,
                    AcceptedRelease(manifest.sequence, manifest.release, digest),
                )
            except OSError as exc:
                self._error("release_state", exc)
                return "rejected"
            return self._accept(manifest, models, source, first=first)

    def _is_serving(self, rej: ReleaseRejected) -> bool:
        current = self.serving_manifest
        return (
            rej.code == "stale_sequence"
            and current is not None
            and rej.sequence == current.sequence
            and rej.release == current.release
        )

    def _accept(
        self, manifest: ModelManifest, models: ModelSet, source: str, *, first: bool
    ) -> str:
        self.serving_sequence = manifest.sequence
        router = self.router
        trial = (
            router is not None
            and router.mode != "off"
            and not first
            and manifest.kind != "rollback"
            and not self.holder.current.empty
        )
        if trial and router is not None:
            router.start_challenger(models, release=manifest.release, sequence=manifest.sequence)
            self.challenger_manifest = manifest
            log.info(
                "hot swap: release %s (sequence %d) from %s on %s trial",
                manifest.release,
                manifest.sequence,
                source,
                router.mode,
            )
            return "challenger"
        if router is not None:
            router.cancel(f"{manifest.kind} {manifest.release} (sequence {manifest.sequence})")
            self.challenger_manifest = None
        old = self.holder.swap(models)
        if router is not None:
            router.refresh()
        replaced = old.release
        self.retire(old)
        del old
        self.serving_manifest = manifest
        self._record_swap(models, source, manifest, replaced=replaced)
        return "swapped"

    def retire(self, models: ModelSet) -> None:
        """Free a set that no longer serves in a worker thread (its sessions take ms to free)."""
        box = [models]
        del models
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            box.clear()  # no loop (a synchronous caller): free it here
            return
        # Submitted on the next loop iteration, once the caller has dropped its references.
        loop.call_soon(loop.run_in_executor, None, box.clear)

    def _record_swap(
        self, models: ModelSet, source: str, manifest: ModelManifest | None, *, replaced: str
    ) -> None:
        self.swaps += 1
        self.metrics.swaps.inc()
        self.metrics.set_release(models.release)
        self.last_swap = {
            "release": models.release,
            "sequence": manifest.sequence if manifest else None,
            "kind": manifest.kind if manifest else "release",
            "replaced": replaced,
            "source": source,
            "versions": models.versions,
            "at": datetime.now(UTC).isoformat(),
        }
        log.info(
            "hot swap: now serving %s (sequence %s, %s) from %s; replaced %s",
            models.release,
            self.last_swap["sequence"],
            self.last_swap["kind"],
            source,
            replaced,
        )

    # the router's news (`TrialListener`) -------------------------------------

    def trial_promoted(self, models: ModelSet, reason: str) -> None:
        """Record a challenger's promotion by the router as a swap."""
        manifest = self.challenger_manifest
        old_release = self.serving_manifest.release if self.serving_manifest else "none"
        if manifest is not None and manifest.release == models.release:
            self.serving_manifest = manifest
        self.challenger_manifest = None
        self._record_swap(models, f"canary ({reason})", manifest, replaced=old_release)

    def trial_rolled_back(self, result: dict[str, Any]) -> None:
        """Record a challenger's rollback by the router as a `canary_rollback` rejection."""
        self.challenger_manifest = None
        rej = ReleaseRejected(
            "canary_rollback",
            str(result.get("reason", "")),
            release=str(result.get("release", "")),
            sequence=result.get("sequence"),
        )
        self._reject(rej, "canary")

    def _reject(self, rej: ReleaseRejected, source: str) -> None:
        self.rejections[rej.code] += 1
        self.metrics.rejections.labels(reason=rej.code).inc()
        self.last_rejection = {
            "release": rej.release or None,
            "sequence": rej.sequence,
            "verified": not rej.claimed,  # False: release and sequence are only claimed
            "code": rej.code,
            "detail": rej.detail,
            "source": source,
            "at": datetime.now(UTC).isoformat(),
        }
        log.warning(
            "hot swap: rejected release %s (sequence %s%s) from %s: %s: %s; still serving %s",
            rej.release or "?",
            rej.sequence,
            ", claimed" if rej.claimed else "",
            source,
            rej.code,
            rej.detail,
            self.holder.current.release,
        )

    def _error(self, kind: str, exc: BaseException) -> None:
        self.loop_errors[kind] += 1
        self.metrics.loop_errors.labels(kind=kind).inc()
        self.last_error = {
            "kind": kind,
            "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            "at": datetime.now(UTC).isoformat(),
        }
        log.warning("hot swap: %s error (the current models keep serving): %s", kind, exc)

    def _remember(self, digest: str, outcome: str) -> None:
        self._seen[digest] = outcome
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)

    # reporting -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return what `/healthz` shows about models: serving, swaps, rejections, errors."""
        current = self.holder.current
        manifest = self.serving_manifest
        return {
            "release": current.release,
            "sequence": manifest.sequence if manifest else None,
            "accepted_sequence": self.serving_sequence,
            "versions": current.versions,
            "model_age_s": round(current.age_s(), 3) if not current.empty else None,
            "swaps": self.swaps,
            "last_swap": self.last_swap,
            "rejections": dict(self.rejections),
            "last_rejection": self.last_rejection,
            "loop_errors": dict(self.loop_errors),
            "last_error": self.last_error,
            "challenger": self.challenger_manifest.release if self.challenger_manifest else None,
            "source": {
                "topic": self.topic if self.use_kafka else None,
                "kafka_connected": self.kafka_connected,
                "latest_json": LATEST_MANIFEST_KEY,
                "poll_sec": self.poll_sec,
                "last_poll_at": self.last_poll_at.isoformat() if self.last_poll_at else None,
            },
            "verify_key_ids": describe_keyring(self.keyring),
            "unsigned_models_allowed": self.settings.allow_unsigned_models,
        }
