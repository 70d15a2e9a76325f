"""OpenSSF model-signing bundles: each released ONNX file signed for third-party verifiers.

Beside `models/{family}/{version}/{family}.onnx` the trainer writes `model.sig`, a
Sigstore bundle made by the `model-signing` package with an ECDSA key
(`MODEL_SIGNING_KEY`, PEM; the package signs with EC keys only), offline. Anyone with
the public key checks a downloaded version directory with the package's own verifier:

    model_signing verify key models/meta/r000007-…/ \\
        --signature models/meta/r000007-…/model.sig --public_key model-signing.pub.pem

This is beside our own signed manifest, which traders verify; the bundle is for tools
that speak the OpenSSF format.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.signing import write_secret_file
from training.config import ReleaseError

__all__ = ["generate_ec_pair", "sign_bundle"]


def sign_bundle(family: str, onnx_bytes: bytes, private_key: str | Path) -> bytes:
    """Return the model-signing bundle of a directory holding only `{family}.onnx`."""
    try:
        from model_signing import signing
    except ImportError as exc:
        raise ReleaseError(
            f"MODEL_SIGNING_KEY is set but model-signing cannot be imported ({exc}): "
            "install the training extra"
        ) from None
    with tempfile.TemporaryDirectory(prefix="tradeloop-bundle-") as tmp:
        model = Path(tmp) / "model"
        model.mkdir()
        (model / f"{family}.onnx").write_bytes(onnx_bytes)
        bundle = Path(tmp) / "model.sig"
        try:
            signing.Config().use_elliptic_key_signer(private_key=Path(private_key)).sign(
                model, bundle
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ReleaseError(
                f"MODEL_SIGNING_KEY cannot sign: {type(exc).__name__}: {exc}"
            ) from None
        return bundle.read_bytes()


def generate_ec_pair(private_path: Path) -> Path:
    """Write a new P-256 private key (PEM, 0600) and its public key beside it; return the latter."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_secret_file(private_path, pem.decode())
    public_path = private_path.with_name(private_path.stem + ".pub.pem")
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path
