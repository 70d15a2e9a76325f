"""Manifest signing: HMAC and Ed25519, key rotation, tampering, and a Node.js verifier."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from infra.contracts import Artifact, GateResult, ModelManifest, utc_now
from infra.settings import Settings
from infra.signing import Keyring, SignatureError, canonical_json, generate_ed25519, verify_body
from tests import ROOT
from training.release import manifest_body, manifest_json, sign_manifest, verify_manifest

FIXTURE_JS = ROOT / "tests" / "fixtures" / "verify_manifest.js"
AWKWARD = {
    "tiny": 1e-7,
    "tenth": 0.1,
    "huge": 1e21,
    "just_below_huge": 1e20,
    "neg_zero": -0.0,
    "denormal": 5e-324,
    "max": 1.7976931348623157e308,
    "third": 1 / 3,
    "micro": 0.000001,
    "neg": -123.456e-12,
    "whole": 2.0,
    "\u00e9t\u00e9": 1.5,
    "Zed": 0.5,
    "\U0001f600": 0.25,
    "\uffff": 0.125,
}


def _settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def _manifest(metrics: dict[str, float] | None = None) -> ModelManifest:
    art = Artifact(
        family="meta",
        version="r000001",
        uri="s3://bucket/models/meta/r000001/meta.onnx",
        s3_version_id="v1",
        sha256="a" * 64,
        size_bytes=1234,
        input_names=("features",),
        output_names=("probabilities",),
        feature_names=("ret_1", "ret_5"),
        metrics=metrics if metrics is not None else dict(AWKWARD),
        probe_input=(0.1, -0.0, 1e-7, 3.0),
        probe_output=(0.25, 0.25, 0.5, 0.0),
    )
    return ModelManifest(
        ts_event=utc_now(),
        release="r000001-20250101T000000Z",
        sequence=1,
        artifacts=(art,),
        gate=GateResult(decision="first", reasons=('caf\u00e9 "quoted" \\ \u2028 \x1f tab\t',)),
    )


def test_hmac_sign_and_verify_roundtrip_through_the_wire_bytes() -> None:
    ring = Keyring.from_settings(_settings(MANIFEST_HMAC_KEY="secret-1", MANIFEST_KEY_ID="k1"))
    signed = sign_manifest(_manifest(), ring)
    assert signed.key_id == "k1"
    assert [s.alg for s in signed.signatures] == ["hmac-sha256"]
    assert verify_manifest(signed, ring) == "k1"
    raw = manifest_json(signed)
    assert verify_manifest(raw, ring) == "k1"  # the bytes as published verify as they are


def test_tampering_with_any_field_breaks_the_signature() -> None:
    ring = Keyring.from_settings(_settings(MANIFEST_HMAC_KEY="secret-1"))
    signed = sign_manifest(_manifest(), ring)
    obj = json.loads(manifest_json(signed))
    for path, value in (
        (("sequence",), 99),
        (("artifacts", 0, "sha256"), "b" * 64),
        (("artifacts", 0, "metrics", "tenth"), 0.1000001),
        (("key_id",), "k2"),
    ):
        bad = json.loads(json.dumps(obj))
        target = bad
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
        with pytest.raises(SignatureError) as err:
            verify_manifest(json.dumps(bad).encode(), ring)
        assert err.value.code == "bad_signature"
    stripped = {k: v for k, v in obj.items() if k != "signatures"}
    with pytest.raises(SignatureError) as err:
        verify_manifest(json.dumps(stripped).encode(), ring)
    assert err.value.code == "unsigned"


def test_unknown_key_id_is_rejected() -> None:
    signer = Keyring.from_settings(_settings(MANIFEST_HMAC_KEY="secret-new", MANIFEST_KEY_ID="k9"))
    verifier = Keyring.from_settings(_settings(MANIFEST_VERIFY_KEYS="k1:secret-1"))
    assert not verifier.can_sign
    with pytest.raises(SignatureError) as err:
        verify_manifest(sign_manifest(_manifest(), signer), verifier)
    assert err.value.code == "unknown_key_id"


def test_key_rotation_old_and_new_releases_verify_with_both_keys_listed() -> None:
    old = Keyring.from_settings(_settings(MANIFEST_HMAC_KEY="secret-1", MANIFEST_KEY_ID="k1"))
    new = Keyring.from_settings(
        _settings(
            MANIFEST_HMAC_KEY="secret-2", MANIFEST_KEY_ID="k2", MANIFEST_VERIFY_KEYS="k1:secret-1"
        )
    )
    m_old, m_new = sign_manifest(_manifest(), old), sign_manifest(_manifest(), new)
    trader = Keyring.from_settings(_settings(MANIFEST_VERIFY_KEYS="k1:secret-1,k2:secret-2"))
    assert verify_manifest(m_old, trader) == "k1"
    assert verify_manifest(m_new, trader) == "k2"
    # once k1 is retired from the verify list, releases signed with it stop verifying
    retired = Keyring.from_settings(_settings(MANIFEST_VERIFY_KEYS="k2:secret-2"))
    with pytest.raises(SignatureError):
        verify_manifest(m_old, retired)
    # the same key id with another secret is a bad signature, not an unknown key
    wrong = Keyring.from_settings(_settings(MANIFEST_VERIFY_KEYS="k1:not-the-secret"))
    with pytest.raises(SignatureError) as err:
        verify_manifest(m_old, wrong)
    assert err.value.code == "bad_signature"


def test_ed25519_verifies_with_the_public_key_alone() -> None:
    private, public = generate_ed25519()
    signer = Keyring.from_settings(
        _settings(MANIFEST_HMAC_KEY="secret-1", MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}")
    )
    signed = sign_manifest(_manifest(), signer)
    assert sorted(s.alg for s in signed.signatures) == ["ed25519", "hmac-sha256"]
    public_only = Keyring.from_settings(_settings(MANIFEST_ED25519_PUBLIC_KEYS=f"ed1:{public}"))
    assert not public_only.can_sign
    assert verify_manifest(signed, public_only) == "ed1"
    tampered = signed.model_copy(update={"sequence": 2})
    with pytest.raises(SignatureError) as err:
        verify_manifest(tampered, public_only)
    assert err.value.code == "bad_signature"
    _other_private, other_public = generate_ed25519()
    stranger = Keyring.from_settings(_settings(MANIFEST_ED25519_PUBLIC_KEYS=f"ed1:{other_public}"))
    with pytest.raises(SignatureError):
        verify_manifest(signed, stranger)


def test_canonical_numbers_follow_ecmascript() -> None:
    expected = {
        1e-7: "1e-7",
        0.1: "0.1",
        1e21: "1e+21",
        1e20: "100000000000000000000",
        -0.0: "0",
        5e-324: "5e-324",
        0.000001: "0.000001",
        1.5e-6: "0.0000015",
        123456789.123: "123456789.123",
        2.0: "2",
        -1.25e-10: "-1.25e-10",
    }
    for value, text in expected.items():
        assert canonical_json(value).decode() == text, value
    assert (
        canonical_json({"b": 1, "a": [True, None, "\u00e9"]})
        == '{"a":[true,null,"\u00e9"],"b":1}'.encode()
    )
    with pytest.raises(ValueError):
        canonical_json(math.nan)


def test_nodejs_verifies_the_manifest_bytes_with_awkward_floats(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node (v20) is required for the cross-language verification test"
    ring = Keyring.from_settings(
        _settings(MANIFEST_HMAC_KEY="s3cr\u00e9t-key", MANIFEST_KEY_ID="k1")
    )
    signed = sign_manifest(_manifest(), ring)
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest_json(signed))
    proc = subprocess.run(
        [node, str(FIXTURE_JS), str(path), "k0=other", "k1=s3cr\u00e9t-key"],
        capture_output=True,
        timeout=30,
        env={"PRINT_CANONICAL": "1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.decode().strip() == "ok k1"
    # JavaScript rebuilt exactly the bytes Python signed
    assert proc.stderr == canonical_json(manifest_body(signed))
    # and it rejects a tampered file and an unknown key
    obj = json.loads(path.read_text())
    obj["artifacts"][0]["metrics"]["tiny"] = 2e-7
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(obj))
    proc = subprocess.run(
        [node, str(FIXTURE_JS), str(bad), "k1=s3cr\u00e9t-key"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout.decode().strip() == "bad_signature"
    proc = subprocess.run(
        [node, str(FIXTURE_JS), str(path), "k7=x"], capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 2 and proc.stdout.decode().strip() == "unknown_key_id"


def test_verify_body_ignores_signatures_member_and_requires_one() -> None:
    ring = Keyring.from_settings(_settings(MANIFEST_HMAC_KEY="x"))
    with pytest.raises(SignatureError) as err:
        verify_body({"a": 1}, [], ring)
    assert err.value.code == "unsigned"


def test_with_public_keys_only_ed25519_verifies() -> None:
    """Old: a valid HMAC verified even when Ed25519 public keys were configured."""
    private, public = generate_ed25519()
    signer = Keyring.from_settings(
        _settings(MANIFEST_HMAC_KEY="secret-1", MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}")
    )
    hmac_only = Keyring(signer.hmac_keys, signer.signing_key_id)
    signed = sign_manifest(_manifest(), hmac_only)
    both_kinds = Keyring(
        signer.hmac_keys, "", None, {"ed1": signer.ed25519_public["ed1"]}, accept_hmac=True
    )
    with pytest.raises(SignatureError) as err:
        verify_manifest(signed, both_kinds)
    assert err.value.code == "downgrade" and "Ed25519" in str(err.value)
    # a trader without public keys accepts HMAC only when it opts in
    trader = Keyring.for_trader(_settings(MANIFEST_HMAC_KEY="secret-1"))
    assert not trader.hmac_keys and not trader.accept_hmac
    with pytest.raises(SignatureError) as err:
        verify_manifest(signed, trader)
    assert err.value.code == "downgrade" and "ALLOW_HMAC_RELEASES=1" in str(err.value)
    opted = Keyring.for_trader(_settings(MANIFEST_HMAC_KEY="secret-1", ALLOW_HMAC_RELEASES="1"))
    assert verify_manifest(signed, opted) == "k1"
    public_trader = Keyring.for_trader(
        _settings(
            MANIFEST_ED25519_PUBLIC_KEYS=f"ed1:{public}",
            MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}",
        )
    )
    assert public_trader.ed25519_private is None and not public_trader.can_sign


def test_keys_are_parsed_strictly_and_written_owner_only(tmp_path: Path) -> None:
    from infra.signing import parse_private_key, write_secret_file

    private, _public = generate_ed25519()
    assert parse_private_key(f"rot2:{private}")[0] == "rot2"
    assert parse_private_key(private)[0] == "ed1"
    for bad in ("ed1:not base64!", "ed1:" + private[:-8]):
        with pytest.raises(ValueError, match="not `id:base64`"):
            parse_private_key(bad)
    with pytest.raises(ValueError, match="MANIFEST_ED25519_PUBLIC_KEYS"):
        Keyring.for_trader(_settings(MANIFEST_ED25519_PUBLIC_KEYS="ed1:@@@"))
    path = tmp_path / "keys" / "k.key"
    write_secret_file(path, "ed1:secret")
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == "ed1:secret"
    with pytest.raises(FileExistsError):
        write_secret_file(path, "ed1:other")
