"""The release helper process against moto S3: what it checks, and what the trader re-checks.

The trader verifies the manifest itself and hashes the bytes the helper returns; a
helper that hands back other bytes is refused, a dead helper is replaced, and with
no helper at all the release is still verified in the trader's process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra.contracts import ModelManifest
from infra.settings import Settings
from infra.signing import Keyring
from tests.hotswap_support import build_blobs, release_bytes
from trader.delivery.hotswap import HotSwapper
from trader.delivery.models import ModelHolder
from trader.delivery.release import ReleaseRejected, check_manifest
from trader.delivery.release_helper import (
    VERIFY_SWITCH_INTERVAL_S,
    HelperUnavailable,
    ReleaseHelper,
    verify_isolated,
    verify_off_loop,
)

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings on moto S3 with a fresh versioned bucket of the test's own."""
    return make_settings(kafka=False, s3=True)


@pytest.fixture(scope="module")
def helper() -> Iterator[ReleaseHelper]:
    """A helper process of this module's own, stopped at the end."""
    own = ReleaseHelper()
    own.start()
    yield own
    own.close()


class TamperingHelper(ReleaseHelper):
    """A helper that returns other bytes than it checked (a compromised helper)."""

    def fetch(self, manifest: ModelManifest, settings: Settings) -> dict[str, bytes]:
        blobs = super().fetch(manifest, settings)
        blobs["sizer"] = build_blobs(seed=7)["sizer"]
        return blobs


class AbsentHelper(ReleaseHelper):
    """A helper that cannot start (no process can be spawned)."""

    def fetch(self, manifest: ModelManifest, settings: Settings) -> dict[str, bytes]:
        raise HelperUnavailable("the release helper could not start: test")


def test_the_helper_fetches_and_the_trader_serves_exactly_the_signed_bytes(
    s3_settings: Settings, helper: ReleaseHelper
) -> None:
    blobs = build_blobs(seed=3)
    raw = release_bytes(s3_settings, 1, blobs=blobs)
    keyring = Keyring.from_settings(s3_settings)
    manifest, models = verify_isolated(raw, 0, keyring, s3_settings, helper=helper)
    assert manifest.release == "r1"
    for family in ("meta", "exec", "sizer"):
        model = getattr(models, family)
        assert model is not None
        assert model.sha256 == hashlib.sha256(blobs[family]).hexdigest()


def test_the_helper_rejects_with_the_same_codes(
    s3_settings: Settings, helper: ReleaseHelper
) -> None:
    keyring = Keyring.from_settings(s3_settings)

    def sha_off(arts: list[Any]) -> list[Any]:
        return [
            a.model_copy(update={"sha256": "0" * 64}) if a.family == "exec" else a for a in arts
        ]

    raw = release_bytes(s3_settings, 2, mutate=sha_off)
    with pytest.raises(ReleaseRejected) as bad_sha:
        verify_isolated(raw, 0, keyring, s3_settings, helper=helper)
    assert bad_sha.value.code == "sha_mismatch"
    assert (bad_sha.value.release, bad_sha.value.sequence) == ("r2", 2)

    def gone(arts: list[Any]) -> list[Any]:
        return [
            a.model_copy(update={"uri": a.uri + "-gone"}) if a.family == "meta" else a for a in arts
        ]

    with pytest.raises(ReleaseRejected) as missing:
        verify_isolated(
            release_bytes(s3_settings, 3, mutate=gone), 0, keyring, s3_settings, helper=helper
        )
    assert missing.value.code == "missing_artifact"
    # the manifest checks run in the trader's process, before the helper is asked
    with pytest.raises(ReleaseRejected) as stale:
        verify_isolated(raw, 5, keyring, s3_settings, helper=helper)
    assert stale.value.code == "stale_sequence"


def test_bytes_the_helper_did_not_check_are_refused(s3_settings: Settings) -> None:
    raw = release_bytes(s3_settings, 1)
    keyring = Keyring.from_settings(s3_settings)
    tampering = TamperingHelper()
    try:
        with pytest.raises(ReleaseRejected) as rej:
            verify_isolated(raw, 0, keyring, s3_settings, helper=tampering)
    finally:
        tampering.close()
    assert rej.value.code == "sha_mismatch"
    assert "sizer" in rej.value.detail


def test_without_a_helper_the_trader_fetches_itself(s3_settings: Settings) -> None:
    raw = release_bytes(s3_settings, 1)
    keyring = Keyring.from_settings(s3_settings)
    manifest, models = verify_isolated(raw, 0, keyring, s3_settings, helper=AbsentHelper())
    assert manifest.release == "r1"
    assert models.families == ("meta", "exec", "sizer")


def test_a_dead_helper_is_replaced(s3_settings: Settings) -> None:
    own = ReleaseHelper()
    try:
        own._submit(os._exit, 3).exception(timeout=60)  # the helper process dies
        raw = release_bytes(s3_settings, 1)
        keyring = Keyring.from_settings(s3_settings)
        manifest, _ = verify_isolated(raw, 0, keyring, s3_settings, helper=own)
        assert manifest.release == "r1"
    finally:
        own.close()


def test_verification_runs_off_the_event_loop_thread(s3_settings: Settings) -> None:
    raw = release_bytes(s3_settings, 1)
    keyring = Keyring.from_settings(s3_settings)
    seen: dict[str, Any] = {}
    original = check_manifest

    def spy(*args: Any, **kwargs: Any) -> ModelManifest:
        seen["thread"] = threading.current_thread().name
        seen["switch_s"] = sys.getswitchinterval()
        return original(*args, **kwargs)

    import trader.delivery.release_helper as rh

    before = sys.getswitchinterval()
    rh.check_manifest = spy  # type: ignore[assignment]
    try:
        manifest, _ = asyncio.run(
            verify_off_loop(raw, 0, keyring, s3_settings, helper=AbsentHelper())
        )
    finally:
        rh.check_manifest = original  # type: ignore[assignment]
    assert manifest.release == "r1"
    assert seen["thread"].startswith("models-verify")
    assert seen["switch_s"] == min(before, VERIFY_SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == before


def test_a_swapper_without_isolation_still_swaps(s3_settings: Settings) -> None:
    holder = ModelHolder()
    swapper = HotSwapper(s3_settings, holder, use_kafka=False, isolate=False)
    assert swapper.helper is None
    raw = release_bytes(s3_settings, 1)
    assert asyncio.run(swapper.apply(raw, source="test")) == "swapped"
    assert holder.current.release == "r1"
