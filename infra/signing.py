"""Manifest signing: Ed25519 (and HMAC-SHA256 for the seed's CI) over canonical JSON.

Canonical form (any language can rebuild it): the manifest's JSON object without
its `signatures` member, serialised with keys sorted, no whitespace, UTF-8, strings
escaped as JSON requires and numbers formatted as ECMAScript does (RFC 8785), so
`JSON.stringify` of a key-sorted object gives the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from infra.settings import Settings

__all__ = [
    "Keyring",
    "SignatureError",
    "canonical_json",
    "generate_ed25519",
    "parse_private_key",
    "sign_body",
    "verify_body",
    "write_secret_file",
]


class SignatureError(ValueError):
    """Raise when a body is unsigned, signed by an unknown key, or the signature fails."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError("NaN and Infinity have no canonical JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    digits, exponent = _shortest(value)
    sign = "-" if value < 0 else ""
    n = exponent + 1  # the position of the decimal point, as ECMAScript names it
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exp = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp)}"


def _shortest(value: float) -> tuple[str, int]:
    """Return the shortest round-trip digits and the decimal exponent of |value|."""
    text = repr(abs(value))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    exponent = int(exp or 0) + len(whole) - 1
    if whole == "0":
        lead = len(frac) - len(frac.lstrip("0"))
        exponent = int(exp or 0) - lead - 1
    return digits.rstrip("0") or "0", exponent


def _canon(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, float):
        out.append(_number(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, Mapping):
        out.append("{")
        items = sorted(obj.items(), key=lambda kv: str(kv[0]).encode("utf-16-be"))
        for i, (k, v) in enumerate(items):
            if i:
                out.append(",")
            out.append(json.dumps(str(k), ensure_ascii=False))
            out.append(":")
            _canon(v, out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _canon(v, out)
        out.append("]")
    else:
        raise TypeError(f"{type(obj).__name__} has no canonical JSON form")


def canonical_json(obj: Any) -> bytes:
    """Return the canonical UTF-8 bytes of a JSON-compatible value."""
    out: list[str] = []
    _canon(obj, out)
    return "".join(out).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _parse_pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, value = item.partition(":")
        if not sep or not kid or not value:
            raise ValueError("key lists are 'key_id:value' pairs separated by commas")
        pairs[kid.strip()] = value.strip()
    return pairs


def _public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    try:
        return {
            kid: Ed25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))
            for kid, b64 in _parse_pairs(text).items()
        }
    except (ValueError, binascii.Error) as exc:
        raise ValueError(
            f"MANIFEST_ED25519_PUBLIC_KEYS: not `id:base64` Ed25519 keys ({exc})"
        ) from None


def _hmac_keys(settings: Settings) -> dict[str, bytes]:
    keys = {
        kid: value.encode()
        for kid, value in _parse_pairs(settings.manifest_verify_keys.get_secret_value()).items()
    }
    signing = settings.manifest_hmac_key.get_secret_value()
    if signing:
        keys[settings.manifest_key_id] = signing.encode()
    return keys


@dataclass(frozen=True)
class Keyring:
    """Signing and verification keys by key id; secrets stay inside and are never shown.

    With any Ed25519 public key, only an Ed25519 signature by one of them verifies
    (an HMAC one is ignored: a release without a good Ed25519 one is a `downgrade`).
    Without one, HMAC verifies only when `accept_hmac` is set.
    """

    hmac_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    signing_key_id: str = ""
    ed25519_private: tuple[str, Ed25519PrivateKey] | None = field(default=None, repr=False)
    ed25519_public: Mapping[str, Ed25519PublicKey] = field(default_factory=dict, repr=False)
    accept_hmac: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """Build the trainer's keyring: MANIFEST_HMAC_KEY, MANIFEST_VERIFY_KEYS, the Ed25519 keys."""
        hmac_keys = _hmac_keys(settings)
        signing = settings.manifest_hmac_key.get_secret_value()
        private = None
        raw_private = settings.manifest_ed25519_private_key.get_secret_value()
        if raw_private:
            private = parse_private_key(raw_private)
        public = _public_keys(settings.manifest_ed25519_public_keys)
        if private is not None and private[0] not in public:
            public[private[0]] = private[1].public_key()
        return cls(hmac_keys, settings.manifest_key_id if signing else "", private, public)

    @classmethod
    def for_trader(cls, settings: Settings) -> Keyring:
        """Build a trader's keyring: verification keys only, never a key that signs.

        The Ed25519 public keys (MANIFEST_ED25519_PUBLIC_KEYS); the HMAC keys only with
        ALLOW_HMAC_RELEASES=1. A private key in the environment is ignored.
        """
        allow = settings.allow_hmac_releases
        hmac_keys = _hmac_keys(settings) if allow else {}
        public = _public_keys(settings.manifest_ed25519_public_keys)
        return cls(hmac_keys, "", None, public, accept_hmac=allow)

    @property
    def can_sign(self) -> bool:
        """Say whether this keyring holds a signing key."""
        return bool(self.signing_key_id) or self.ed25519_private is not None

    @property
    def requires_ed25519(self) -> bool:
        """Say whether only an Ed25519 signature verifies (a public key is configured)."""
        return bool(self.ed25519_public)


def parse_private_key(text: str) -> tuple[str, Ed25519PrivateKey]:
    """Return (key id, key) from `id:base64` (or bare base64, id `ed1`) of a raw Ed25519 key."""
    kid, _, b64 = text.strip().partition(":") if ":" in text else ("ed1", "", text.strip())
    try:
        return kid, Ed25519PrivateKey.from_private_bytes(base64.b64decode(b64, validate=True))
    except (ValueError, binascii.Error):
        raise ValueError("the Ed25519 private key is not `id:base64` of 32 raw bytes") from None


def generate_ed25519() -> tuple[str, str]:
    """Return a new (private, public) Ed25519 key pair, each base64 of the raw bytes."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return _b64(private), _b64(public)


def write_secret_file(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (0600) and write `text`; never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)  # whatever the umask


def sign_body(body: Mapping[str, Any], keyring: Keyring) -> list[dict[str, str]]:
    """Return the signatures of a body (which must not hold `signatures`)."""
    if "signatures" in body:
        raise ValueError("sign the body without its 'signatures' member")
    if not keyring.can_sign:
        raise SignatureError("no_signing_key", "set MANIFEST_HMAC_KEY (or an Ed25519 private key)")
    payload = canonical_json(body)
    sigs: list[dict[str, str]] = []
    if keyring.signing_key_id:
        key = keyring.hmac_keys[keyring.signing_key_id]
        mac = hmac.new(key, payload, hashlib.sha256).hexdigest()
        sigs.append({"alg": "hmac-sha256", "key_id": keyring.signing_key_id, "value": mac})
    if keyring.ed25519_private is not None:
        kid, private = keyring.ed25519_private
        sigs.append({"alg": "ed25519", "key_id": kid, "value": _b64(private.sign(payload))})
    return sigs


def verify_body(
    body: Mapping[str, Any], signatures: Iterable[Mapping[str, Any]], keyring: Keyring
) -> str:
    """Verify the signatures this keyring trusts; return the key id that verified.

    Raise `SignatureError`: `unsigned` (no signature), `downgrade` (no signature of
    the kind the keyring requires: Ed25519 when it has a public key, else HMAC only
    when it accepts HMAC), `unknown_key_id` (none by a known key), `bad_signature`
    (a known key's signature fails), `unknown_algorithm`.
    """
    sigs = list(signatures)
    if not sigs:
        raise SignatureError("unsigned", "the manifest carries no signature")
    payload = canonical_json({k: v for k, v in body.items() if k != "signatures"})
    ed_only = keyring.requires_ed25519
    verified = ""
    unknown = []
    trusted_kind = 0
    for sig in sigs:
        alg, kid, value = sig.get("alg"), str(sig.get("key_id", "")), str(sig.get("value", ""))
        if alg == "hmac-sha256":
            if ed_only or not keyring.accept_hmac:
                continue  # not trusted here: it can neither accept nor refuse a release
            trusted_kind += 1
            key = keyring.hmac_keys.get(kid)
            if key is None:
                unknown.append(kid)
                continue
            expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected.encode(), value.encode()):
                raise SignatureError("bad_signature", f"HMAC by key id {kid!r} does not verify")
        elif alg == "ed25519":
            trusted_kind += 1
            public = keyring.ed25519_public.get(kid)
            if public is None:
                unknown.append(kid)
                continue
            try:
                public.verify(base64.b64decode(value, validate=True), payload)
            except (InvalidSignature, ValueError, binascii.Error):
                raise SignatureError(
                    "bad_signature", f"Ed25519 by key id {kid!r} does not verify"
                ) from None
        else:
            raise SignatureError("unknown_algorithm", f"signature algorithm {alg!r}")
        verified = verified or kid
    if not trusted_kind:
        want = (
            "an Ed25519 signature by a MANIFEST_ED25519_PUBLIC_KEYS key"
            if ed_only or not keyring.accept_hmac
            else "an HMAC signature"
        )
        hint = "" if ed_only or keyring.accept_hmac else " (HMAC needs ALLOW_HMAC_RELEASES=1)"
        raise SignatureError("downgrade", f"the manifest lacks {want}{hint}")
    if not verified:
        raise SignatureError("unknown_key_id", f"no known key among key ids {unknown}")
    return verified
