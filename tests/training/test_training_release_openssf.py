"""Every released artifact carries an OpenSSF model-signing bundle its own verifier accepts.

`tradeloop models keygen --ecdsa` makes the keys; a release published by the
`Registry` writes `model.sig` beside each ONNX file; `python -m model_signing verify
key` (the package's CLI, in a subprocess, offline) accepts the version directory as
a third party downloads it, and refuses it once a byte changes.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from infra.contracts.keys import artifact_bundle_key
from infra.settings import Settings
from infra.signing import Keyring
from tests.hotswap_support import build_blobs, probe
from training.cli import models
from training.release import Registry, build_manifest, sign_manifest


def _verify(directory: Path, public: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "model_signing",
            "verify",
            "key",
            str(directory),
            "--signature",
            str(directory / "model.sig"),
            "--public_key",
            str(public),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_keygen_writes_owner_only_private_keys(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        models, ["keygen", "--out", str(tmp_path / "k" / "rel.key"), "--ecdsa"]
    )
    assert out.exit_code == 0, out.output
    private = tmp_path / "k" / "rel.key"
    ec_private = tmp_path / "k" / "model-signing.pem"
    for path in (private, ec_private):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kid, _, b64 = private.read_text().strip().partition(":")
    assert kid == "ed1" and b64 not in out.output  # the private key is never printed
    public = (tmp_path / "k" / "rel.pub").read_text().strip()
    assert f"MANIFEST_ED25519_PUBLIC_KEYS={public}" in out.output
    assert "BEGIN PUBLIC KEY" in (tmp_path / "k" / "model-signing.pub.pem").read_text()
    again = CliRunner().invoke(models, ["keygen", "--out", str(private)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output


def test_a_published_release_passes_the_model_signing_verifier(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    out = CliRunner().invoke(models, ["keygen", "--out", str(keys / "rel.key"), "--ecdsa"])
    assert out.exit_code == 0, out.output
    settings = make_settings(
        kafka=False,
        MANIFEST_ED25519_PRIVATE_KEY=(keys / "rel.key").read_text().strip(),
        MODEL_SIGNING_KEY=str(keys / "model-signing.pem"),
    )
    reg = Registry(settings)
    blobs = build_blobs(5)
    arts = []
    for family, blob in blobs.items():
        pin, pout = probe(family, blob)
        arts.append(reg.upload(family, "r5", blob, metrics={}, probe_input=pin, probe_output=pout))
    manifest = build_manifest(release="r5", sequence=1, artifacts=arts, previous=reg.chain_link())
    reg.publish(sign_manifest(manifest, Keyring.from_settings(settings)), topic=False)
    public = keys / "model-signing.pub.pem"
    for family in blobs:
        # a third party mirrors the version directory: the ONNX file and its bundle
        bundle_key = artifact_bundle_key(family, "r5")
        source = (settings.store_root / bundle_key).parent
        mirror = tmp_path / "mirror" / family
        shutil.copytree(source, mirror)
        assert sorted(p.name for p in mirror.iterdir()) == sorted(["model.sig", f"{family}.onnx"])
        ok = _verify(mirror, public)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "Verification succeeded" in ok.stdout
    # one changed byte, and the package's verifier refuses it
    onnx = tmp_path / "mirror" / "meta" / "meta.onnx"
    data = bytearray(onnx.read_bytes())
    data[30] ^= 0x01
    onnx.write_bytes(bytes(data))
    bad = _verify(tmp_path / "mirror" / "meta", public)
    assert bad.returncode != 0
    # and another key's public half does not verify the genuine bundle
    other = tmp_path / "other"
    assert (
        CliRunner().invoke(models, ["keygen", "--out", str(other / "o.key"), "--ecdsa"]).exit_code
        == 0
    )
    assert _verify(tmp_path / "mirror" / "exec", other / "model-signing.pub.pem").returncode != 0
