"""The release chain cannot be forged: key policy, bytes as received, replay, chain.

Each test names the old behaviour it catches. Releases go through a real
`HotSwapper` (no Kafka) on the local store or moto S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from infra.settings import Settings
from infra.signing import Keyring, generate_ed25519, sign_body
from tests.hotswap_support import body_of, build_blobs, release_bytes, unsigned_manifest, upload
from trader.delivery.hotswap import HotSwapper
from trader.delivery.models import ModelHolder
from trader.delivery.release import ReleaseRejected, check_manifest
from trader.delivery.replay import ReleaseLedger, ReleaseStateError


def _pair(make_settings: Callable[..., Settings], **env: Any) -> tuple[Settings, Settings]:
    """Return (trainer, trader) settings sharing a store: Ed25519 keys, the trader's public only."""
    private, public = generate_ed25519()
    trainer = make_settings(kafka=False, MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}", **env)
    trader = make_settings(
        kafka=False,
        STORE_DIR=str(trainer.store_root),
        RELEASE_STATE_PATH=str(trainer.release_state_file),
        MANIFEST_ED25519_PUBLIC_KEYS=f"ed1:{public}",
        ALLOW_HMAC_RELEASES="0",
        **env,
    )
    return trainer, trader


def _swapper(settings: Settings) -> HotSwapper:
    return HotSwapper(settings, ModelHolder(), use_kafka=False, isolate=False)


def _apply(swapper: HotSwapper, raw: bytes) -> str:
    return asyncio.run(swapper.apply(raw, source="test"))


def _code(swapper: HotSwapper) -> str:
    assert swapper.last_rejection is not None
    return str(swapper.last_rejection["code"])


def _hmac_only(settings: Settings) -> Keyring:
    full = Keyring.from_settings(settings)
    return Keyring(full.hmac_keys, full.signing_key_id)


# signatures and keys ---------------------------------------------------------------------


def test_with_public_keys_an_hmac_only_release_is_a_downgrade(
    make_settings: Callable[..., Settings],
) -> None:
    """Old: a valid HMAC was accepted even with Ed25519 keys configured."""
    trainer, trader = _pair(make_settings)
    # the trader even holds the HMAC key and opts in to HMAC: Ed25519 still rules
    opted = make_settings(
        kafka=False,
        STORE_DIR=str(trainer.store_root),
        MANIFEST_ED25519_PUBLIC_KEYS=trader.manifest_ed25519_public_keys,
        ALLOW_HMAC_RELEASES="1",
    )
    raw = release_bytes(trainer, 1, keyring=_hmac_only(trainer))
    assert [s["alg"] for s in orjson.loads(raw)["signatures"]] == ["hmac-sha256"]
    for settings in (trader, opted):
        swapper = _swapper(settings)
        assert _apply(swapper, raw) == "rejected"
        assert _code(swapper) == "downgrade"
        assert swapper.holder.current.empty
    # the same release signed by the trainer's Ed25519 key (and HMAC) is served
    good = release_bytes(trainer, 2)
    assert sorted(s["alg"] for s in orjson.loads(good)["signatures"]) == [
        "ed25519",
        "hmac-sha256",
    ]
    assert _apply(_swapper(trader), good) == "swapped"


def test_hmac_needs_an_explicit_opt_in_and_is_flagged(
    make_settings: Callable[..., Settings],
) -> None:
    """Old: any trader holding MANIFEST_HMAC_KEY accepted HMAC releases silently."""
    strict = make_settings(kafka=False, ALLOW_HMAC_RELEASES="0")
    raw = release_bytes(strict, 1)
    swapper = _swapper(strict)
    assert _apply(swapper, raw) == "rejected" and _code(swapper) == "downgrade"
    assert "ALLOW_HMAC_RELEASES" in str(swapper.last_rejection)
    keys = swapper.status()["verify_key_ids"]
    assert keys["hmac"] == [] and keys["accepts"] == "nothing"
    opted = make_settings(kafka=False, STORE_DIR=str(strict.store_root), ALLOW_HMAC_RELEASES="1")
    weak = _swapper(opted)
    assert _apply(weak, raw) == "swapped"
    assert weak.status()["verify_key_ids"]["hmac_releases_allowed"] is True


def test_a_trader_keyring_never_holds_a_signing_key(make_settings: Callable[..., Settings]) -> None:
    """Old: `Keyring.from_settings` on a trader kept MANIFEST_ED25519_PRIVATE_KEY and the HMAC key."""
    private, public = generate_ed25519()
    settings = make_settings(
        kafka=False,
        MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}",
        MANIFEST_ED25519_PUBLIC_KEYS=f"ed1:{public}",
        ALLOW_HMAC_RELEASES="0",
    )
    keyring = Keyring.for_trader(settings)
    assert not keyring.can_sign and not keyring.hmac_keys and keyring.ed25519_private is None
    assert sorted(keyring.ed25519_public) == ["ed1"]
    assert _swapper(settings).keyring.can_sign is False


def test_key_rotation_with_overlapping_key_ids(make_settings: Callable[..., Settings]) -> None:
    """Old and new keys verify side by side; dropping the old one retires its releases."""
    old_private, old_public = generate_ed25519()
    new_private, new_public = generate_ed25519()
    old = make_settings(kafka=False, MANIFEST_ED25519_PRIVATE_KEY=f"ed2025:{old_private}")
    new = make_settings(
        kafka=False,
        STORE_DIR=str(old.store_root),
        MANIFEST_ED25519_PRIVATE_KEY=f"ed2026:{new_private}",
    )
    both = make_settings(
        kafka=False,
        STORE_DIR=str(old.store_root),
        MANIFEST_ED25519_PUBLIC_KEYS=f"ed2025:{old_public},ed2026:{new_public}",
        ALLOW_HMAC_RELEASES="0",
    )
    only_new = make_settings(
        kafka=False,
        STORE_DIR=str(old.store_root),
        MANIFEST_ED25519_PUBLIC_KEYS=f"ed2026:{new_public}",
        ALLOW_HMAC_RELEASES="0",
    )
    by_old = release_bytes(old, 1, keyring=Keyring.from_settings(old))
    by_new = release_bytes(new, 2, keyring=Keyring.from_settings(new))
    trader = _swapper(both)
    assert _apply(trader, by_old) == "swapped"
    assert _apply(trader, by_new) == "swapped"
    retired = _swapper(only_new)
    assert _apply(retired, by_old) == "rejected" and _code(retired) == "unknown_key_id"
    assert _apply(retired, by_new) == "swapped"
    # the same key id with another key is a bad signature, not a second key
    forger_private, _ = generate_ed25519()
    forger = make_settings(
        kafka=False,
        STORE_DIR=str(old.store_root),
        MANIFEST_ED25519_PRIVATE_KEY=f"ed2026:{forger_private}",
    )
    forged = release_bytes(forger, 3, keyring=Keyring.from_settings(forger))
    assert _apply(retired, forged) == "rejected" and _code(retired) == "bad_signature"


# the bytes as received -----------------------------------------------------------------------


def test_a_coerced_value_is_refused(make_settings: Callable[..., Settings]) -> None:
    """Old: `"sequence": "2"` failed the signature, then the decoded (coerced) dump verified."""
    trainer, trader = _pair(make_settings)
    keyring = Keyring.for_trader(trader)
    raw = release_bytes(trainer, 2)
    obj = orjson.loads(raw)
    obj["sequence"] = "2"
    with pytest.raises(ReleaseRejected) as err:
        check_manifest(orjson.dumps(obj), 1, keyring)
    assert err.value.code == "bad_signature" and err.value.claimed
    # a body signed with the string form is signed, but does not re-serialise to itself
    manifest = unsigned_manifest(upload(trainer, build_blobs(3), "v3"), 3)
    body = body_of(manifest)
    body["sequence"] = "3"
    body["key_id"] = "ed1"
    signed = orjson.dumps({**body, "signatures": sign_body(body, Keyring.from_settings(trainer))})
    with pytest.raises(ReleaseRejected) as err:
        check_manifest(signed, 1, keyring)
    assert err.value.code == "invalid_manifest" and "sequence" in err.value.detail
    # an unknown field, signed, is refused too
    body = {**body_of(manifest), "key_id": "ed1", "promote_now": True}
    extra = orjson.dumps({**body, "signatures": sign_body(body, Keyring.from_settings(trainer))})
    with pytest.raises(ReleaseRejected) as err:
        check_manifest(extra, 1, keyring)
    assert err.value.code == "invalid_manifest" and "promote_now" in err.value.detail


# anti-replay and the chain ----------------------------------------------------------------


def test_an_older_release_replayed_after_a_restart_is_refused(
    make_settings: Callable[..., Settings],
) -> None:
    """Old: the accepted sequence lived in memory; a restarted trader took any old release."""
    trainer, trader = _pair(make_settings)
    r1, r2 = release_bytes(trainer, 1), release_bytes(trainer, 2)
    first = _swapper(trader)
    assert _apply(first, r1) == "swapped" and _apply(first, r2) == "swapped"
    state = orjson.loads(trader.release_state_file.read_bytes())
    assert state["model_sets"]["default"] == {
        "sequence": 2,
        "release": "r2",
        "sha256": hashlib.sha256(r2).hexdigest(),
    }
    assert os.stat(trader.release_state_file).st_mode & 0o777 == 0o600
    restarted = _swapper(trader)  # a new process: nothing in memory
    assert _apply(restarted, r1) == "rejected" and _code(restarted) == "replayed"
    assert restarted.holder.current.empty
    # the release accepted last is served again after the restart
    assert _apply(restarted, r2) == "swapped"
    # another manifest claiming that same sequence is a replay too
    twin = release_bytes(trainer, 2, seed=9, release="r2-twin")
    assert _apply(_swapper(trader), twin) == "rejected"


def test_a_corrupt_state_file_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "release-state.json"
    path.write_text('{"model_sets": {"default": {"sequence": "9"}}}')
    with pytest.raises(ReleaseStateError):
        ReleaseLedger(path)


def test_a_broken_link_is_refused(make_settings: Callable[..., Settings]) -> None:
    """Old: manifests carried no link to their predecessor; nothing could be checked."""
    trainer, trader = _pair(make_settings)
    r1 = release_bytes(trainer, 1)
    swapper = _swapper(trader)
    assert _apply(swapper, r1) == "swapped"
    good_link = {"previous_sequence": 1, "previous_sha256": hashlib.sha256(r1).hexdigest()}
    bad_link = {"previous_sequence": 1, "previous_sha256": "ab" * 32}
    assert _apply(swapper, release_bytes(trainer, 2, **bad_link)) == "rejected"
    assert _code(swapper) == "chain_broken"
    r2 = release_bytes(trainer, 3, **good_link)
    assert _apply(swapper, r2) == "swapped"
    # a fork: a later manifest that links past the one this trader accepted
    assert _apply(swapper, release_bytes(trainer, 4, **good_link)) == "rejected"
    assert _code(swapper) == "chain_broken"
    # a link beyond what this trader saw (it missed a release) cannot be checked: served
    missed = {"previous_sequence": 4, "previous_sha256": "cd" * 32}
    assert _apply(swapper, release_bytes(trainer, 5, **missed)) == "swapped"
