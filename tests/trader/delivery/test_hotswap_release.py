"""Release verification against moto S3 (and the local store): every rejection code.

Each test starts a `HotSwapper` (no Kafka) serving a good signed release r1, then
hands it a bad release and checks the code, that r1 still serves, and that the
rejection shows in `status()` and in Prometheus without any secret.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from infra.contracts import Artifact, ModelManifest, encode
from infra.objectstore import object_store
from infra.settings import Settings
from infra.signing import Keyring, generate_ed25519
from tests.helpers import TEST_HMAC_KEY, s3_bucket_for, unique
from tests.hotswap_support import (
    body_of,
    build_blobs,
    release_bytes,
    sign,
    unsigned_manifest,
    upload,
    wrong_width_model,
)
from trader import metrics
from trader.delivery.hotswap import HotSwapper
from trader.delivery.models import ModelHolder
from trader.delivery.release import ReleaseRejected, verify_release

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings on moto S3 with a fresh versioned bucket of the test's own."""
    return make_settings(kafka=False, s3=True)


class Serving:
    """A swapper serving r1, and the r1 bytes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = ModelHolder()
        self.swapper = HotSwapper(settings, self.holder, use_kafka=False)
        self.r1 = release_bytes(settings, 1)
        assert self.apply(self.r1) == "swapped"
        assert self.holder.current.release == "r1"

    def apply(self, raw: bytes, source: str = "test") -> str:
        return asyncio.run(self.swapper.apply(raw, source=source))

    def rejects(self, raw: bytes, code: str) -> dict[str, Any]:
        before = _rejection_count(code)
        assert self.apply(raw) == "rejected"
        assert self.holder.current.release == "r1", "the previous set must keep serving"
        status = self.swapper.status()
        assert status["release"] == "r1"
        assert status["last_rejection"]["code"] == code, status["last_rejection"]
        assert status["rejections"][code] == 1
        assert _rejection_count(code) == before + 1
        text = orjson.dumps(status).decode()
        assert TEST_HMAC_KEY not in text
        return dict(status["last_rejection"])


def _rejection_count(code: str) -> float:
    value = metrics.REGISTRY.get_sample_value("tradeloop_model_rejections_total", {"reason": code})
    return value or 0.0


def test_a_good_release_swaps_and_scores(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    r2 = release_bytes(s3_settings, 2)
    assert s.apply(r2) == "swapped"
    current = s.holder.current
    assert current.release == "r2"
    assert current.versions == {"meta": "v2", "exec": "v2", "sizer": "v2"}
    status = s.swapper.status()
    assert status["swaps"] == 2
    assert status["last_swap"]["release"] == "r2"
    assert status["sequence"] == 2
    assert status["rejections"] == {}
    assert s.holder.swaps == 2
    release_info = metrics.REGISTRY.get_sample_value(
        "tradeloop_model_release_info", {"release": "r2"}
    )
    assert release_info == 1.0
    # the same bytes again (e.g. latest.json naming the serving release) change nothing
    assert s.apply(r2) == "duplicate"
    assert s.swapper.status()["rejections"] == {}


def test_tampered_artifact_bytes_in_s3_are_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    blobs = build_blobs(2)
    # someone overwrites the exec model; the manifest pins that later version
    evil = bytearray(blobs["exec"])
    evil[-5] ^= 0xFF
    tampered = object_store(s3_settings).put("models/exec/v2/model.onnx", bytes(evil))

    def pin_evil(arts: list[Artifact]) -> list[Artifact]:
        a = arts[1]
        return [arts[0], a.model_copy(update={"s3_version_id": tampered.version_id}), arts[2]]

    raw = release_bytes(s3_settings, 2, blobs=blobs, mutate=pin_evil)
    rej = s.rejects(raw, "sha_mismatch")
    assert rej["release"] == "r2" and rej["sequence"] == 2
    assert "exec" in rej["detail"]


def test_an_unpinned_artifact_is_a_bad_uri(s3_settings: Settings) -> None:
    """Old code fetched the newest bytes of an unpinned key (the sha256 alone decided)."""
    s = Serving(s3_settings)

    def unpinned(arts: list[Artifact]) -> list[Artifact]:
        return [a.model_copy(update={"s3_version_id": None}) for a in arts]

    rej = s.rejects(release_bytes(s3_settings, 2, mutate=unpinned), "bad_uri")
    assert "pinned version id" in rej["detail"]


def test_tampered_artifact_bytes_in_a_local_store_are_rejected(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(kafka=False)
    s = Serving(settings)
    raw = release_bytes(settings, 2)
    manifest = ModelManifest.model_validate(orjson.loads(raw))
    art = manifest.artifact("meta")
    assert art is not None and art.uri == "models/meta/v2/model.onnx"  # a key, not a path
    # tamper both the file and its immutable version copy on disk
    root = settings.store_root
    assert art.s3_version_id is not None
    for path in (root / art.uri, root / ".versions" / art.uri / art.s3_version_id):
        data = bytearray(path.read_bytes())
        data[10] ^= 0x01
        path.write_bytes(bytes(data))
    s.rejects(raw, "sha_mismatch")


def test_a_tampered_manifest_field_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    raw = release_bytes(s3_settings, 2)
    obj = orjson.loads(raw)
    obj["artifacts"][0]["metrics"]["auc"] = 0.99  # looks better than it is
    rej = s.rejects(orjson.dumps(obj), "bad_signature")
    assert "k1" in rej["detail"]
    obj = orjson.loads(raw)
    obj["sequence"] = 1000
    assert s.apply(orjson.dumps(obj)) == "rejected"
    assert s.swapper.status()["rejections"]["bad_signature"] == 2


def test_a_release_signed_with_the_wrong_key_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    wrong = Keyring({"k1": b"not-the-real-key"}, "k1")
    raw = release_bytes(s3_settings, 2, keyring=wrong)
    s.rejects(raw, "bad_signature")


def test_an_unknown_key_id_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    other = Keyring({"k9": TEST_HMAC_KEY.encode()}, "k9")
    rej = s.rejects(release_bytes(s3_settings, 2, keyring=other), "unknown_key_id")
    assert "k9" in rej["detail"]


def test_an_unsigned_release_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    manifest = unsigned_manifest(upload(s3_settings, build_blobs(2), "v2"), 2)
    s.rejects(encode(manifest), "unsigned")


def test_a_replayed_older_sequence_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    assert s.apply(release_bytes(s3_settings, 2)) == "swapped"
    assert s.apply(s.r1) == "rejected"  # the genuine, signed r1 replayed
    status = s.swapper.status()
    assert status["release"] == "r2"
    assert status["last_rejection"]["code"] == "replayed"  # was `stale_sequence`
    assert status["last_rejection"]["sequence"] == 1


def test_malformed_json_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    s.rejects(b'{"schema": {"name": "model_manifest"', "malformed")
    assert s.apply(b"[1, 2, 3]") == "rejected"
    assert s.swapper.status()["rejections"]["malformed"] == 2


def test_an_invalid_manifest_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    manifest = unsigned_manifest(upload(s3_settings, build_blobs(2), "v2"), 2)
    body = body_of(manifest)
    body["sequence"] = "two"
    keyring = Keyring.from_settings(s3_settings)
    from infra.signing import sign_body

    raw = orjson.dumps({**body, "signatures": sign_body(body, keyring)})
    s.rejects(raw, "invalid_manifest")


def test_a_missing_artifact_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)

    def gone(arts: list[Artifact]) -> list[Artifact]:
        a = arts[1]
        moved = {"uri": a.uri.replace("v2", "v2-gone"), "version": "v2-gone"}
        return [arts[0], a.model_copy(update=moved), arts[2]]

    rej = s.rejects(release_bytes(s3_settings, 2, mutate=gone), "missing_artifact")
    assert "exec" in rej["detail"]

    # a version id that does not exist is missing too
    def bad_version(arts: list[Artifact]) -> list[Artifact]:
        return [arts[0].model_copy(update={"s3_version_id": "no-such-version"}), *arts[1:]]

    assert s.apply(release_bytes(s3_settings, 3, mutate=bad_version)) == "rejected"
    assert s.swapper.status()["rejections"]["missing_artifact"] == 2


def test_an_onnx_file_that_does_not_load_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    blobs = build_blobs(2)
    blobs["sizer"] = b"\x08\x07this is not an onnx graph" * 10
    rej = s.rejects(release_bytes(s3_settings, 2, blobs=blobs), "load_failed")
    assert "sizer" in rej["detail"]


def test_a_model_whose_inputs_do_not_match_the_features_is_rejected(
    s3_settings: Settings,
) -> None:
    s = Serving(s3_settings)
    # the manifest names the right features, but the graph takes 7 inputs
    blobs = build_blobs(2)
    blobs["meta"] = wrong_width_model("meta", 7)

    def fix_probe(arts: list[Artifact]) -> list[Artifact]:
        ok = build_blobs(2)["meta"]
        from tests.hotswap_support import probe

        pin, pout = probe("meta", ok)
        return [
            arts[0].model_copy(update={"probe_input": tuple(pin), "probe_output": tuple(pout)}),
            *arts[1:],
        ]

    rej = s.rejects(
        release_bytes(s3_settings, 2, blobs=blobs, mutate=fix_probe), "feature_mismatch"
    )
    assert "meta" in rej["detail"]

    # the manifest's own feature list differs from the model contract
    def renamed(arts: list[Artifact]) -> list[Artifact]:
        names = list(arts[1].feature_names)
        names[0] = "ret_2"
        return [arts[0], arts[1].model_copy(update={"feature_names": tuple(names)}), arts[2]]

    assert s.apply(release_bytes(s3_settings, 3, mutate=renamed)) == "rejected"
    assert s.swapper.status()["last_rejection"]["code"] == "feature_mismatch"

    def wrong_input(arts: list[Artifact]) -> list[Artifact]:
        return [*arts[:2], arts[2].model_copy(update={"input_names": ("features",)})]

    assert s.apply(release_bytes(s3_settings, 4, mutate=wrong_input)) == "rejected"
    assert s.swapper.status()["rejections"]["feature_mismatch"] == 3


def test_a_probe_that_scores_differently_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)

    def off(arts: list[Artifact]) -> list[Artifact]:
        a = arts[1]
        return [
            arts[0],
            a.model_copy(update={"probe_output": (a.probe_output[0] + 0.01,)}),
            arts[2],
        ]

    rej = s.rejects(release_bytes(s3_settings, 2, mutate=off), "probe_mismatch")
    assert "exec" in rej["detail"]


def test_a_release_for_another_model_set_is_rejected(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    s.rejects(release_bytes(s3_settings, 2, model_set="nq-only"), "wrong_model_set")


def test_a_signed_rollback_is_accepted(s3_settings: Settings) -> None:
    s = Serving(s3_settings)
    assert s.apply(release_bytes(s3_settings, 2)) == "swapped"
    r1 = ModelManifest.model_validate(orjson.loads(s.r1))
    rollback = unsigned_manifest(
        list(r1.artifacts), 3, release="r3-rollback", kind="rollback", rollback_of="r2"
    )
    raw = sign(rollback, Keyring.from_settings(s3_settings))
    assert s.apply(raw) == "swapped"
    current = s.holder.current
    assert current.release == "r3-rollback"
    assert current.versions == {"meta": "v1", "exec": "v1", "sizer": "v1"}
    status = s.swapper.status()
    assert status["last_swap"]["kind"] == "rollback"
    assert status["sequence"] == 3
    # a rollback must still be newer: the same rollback with an old sequence is replayed
    old = unsigned_manifest(list(r1.artifacts), 2, release="r2-rollback", kind="rollback")
    assert s.apply(sign(old, Keyring.from_settings(s3_settings))) == "rejected"
    assert s.swapper.status()["last_rejection"]["code"] == "replayed"


def test_ed25519_only_verification(make_settings: Callable[..., Settings], s3_server: Any) -> None:
    private, public = generate_ed25519()
    bucket = s3_bucket_for(s3_server.address, unique("hs"))
    publisher = make_settings(
        kafka=False,
        s3=True,
        S3_BUCKET=bucket,
        MANIFEST_HMAC_KEY="",
        MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}",
    )
    trader = make_settings(
        kafka=False,
        s3=True,
        S3_BUCKET=bucket,
        MANIFEST_HMAC_KEY="",
        MANIFEST_ED25519_PUBLIC_KEYS=f"ed1:{public}",
    )
    keyring = Keyring.for_trader(trader)
    assert not keyring.hmac_keys and not keyring.can_sign  # verification only
    raw = release_bytes(publisher, 1)
    assert orjson.loads(raw)["signatures"][0]["alg"] == "ed25519"
    manifest, models = verify_release(raw, 0, keyring, trader)
    assert manifest.release == "r1" and models.families == ("meta", "exec", "sizer")
    # an HMAC-signed release means nothing to an Ed25519-only trader
    hmac_signed = release_bytes(make_settings(kafka=False, s3=True, S3_BUCKET=bucket), 2)
    with pytest.raises(ReleaseRejected) as err:
        verify_release(hmac_signed, 1, keyring, trader)
    assert err.value.code == "downgrade"
    # a signature by another Ed25519 key under the same key id fails
    other_private, _ = generate_ed25519()
    forger = make_settings(
        kafka=False,
        s3=True,
        S3_BUCKET=bucket,
        MANIFEST_HMAC_KEY="",
        MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{other_private}",
    )
    with pytest.raises(ReleaseRejected) as err:
        verify_release(release_bytes(forger, 3), 1, keyring, trader)
    assert err.value.code == "bad_signature"
    assert base64.b64decode(public)  # the public key is what the trader holds


def test_the_signature_verifies_over_the_wire_object_as_well(s3_settings: Settings) -> None:
    """A publisher that signs the exact JSON it sends (datetimes as +00:00) verifies too."""
    keyring = Keyring.from_settings(s3_settings)
    manifest = unsigned_manifest(upload(s3_settings, build_blobs(1), "v1"), 1)
    wire = orjson.loads(encode(manifest))
    wire.pop("signatures")
    from infra.signing import sign_body

    raw = orjson.dumps({**wire, "signatures": sign_body(wire, keyring)})
    assert b"+00:00" in raw
    got, _ = verify_release(raw, 0, keyring, s3_settings)
    assert got.release == "r1"
    # and the canonical body is language neutral: its digest is stable
    assert hashlib.sha256(orjson.dumps(body_of(got))).hexdigest()


def test_rejections_never_log_secrets(
    s3_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    s = Serving(s3_settings)
    wrong = Keyring({"k1": b"another-secret-key-material"}, "k1")
    raw = release_bytes(s3_settings, 2, keyring=wrong)
    signature = orjson.loads(raw)["signatures"][0]["value"]
    with caplog.at_level("DEBUG"):
        s.rejects(raw, "bad_signature")
    text = caplog.text + orjson.dumps(s.swapper.status()).decode()
    assert "bad_signature" in caplog.text
    for secret in (TEST_HMAC_KEY, "another-secret-key-material", signature):
        assert secret not in text


def test_verify_release_is_usable_without_a_swapper(s3_settings: Settings) -> None:
    keyring = Keyring.from_settings(s3_settings)
    raw = release_bytes(s3_settings, 5)
    manifest, models = verify_release(raw, 4, keyring, s3_settings)
    assert manifest.sequence == 5 and models.release == "r5"
    assert models.probe()  # scores the default probe rows too
    with pytest.raises(ReleaseRejected) as err:
        verify_release(raw, 5, keyring, s3_settings)
    assert (err.value.code, err.value.sequence) == ("stale_sequence", 5)
