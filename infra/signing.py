"""Manifest signing: HMAC-SHA256 (and optional Ed25519) over canonical JSON.

Canonical form (any language can rebuild it): the manifest's JSON object without
its `signatures` member, serialised with keys sorted, no whitespace, UTF-8, strings
escaped as JSON requires and numbers formatted as ECMAScript does (RFC 8785), so
`JSON.stringify` of a key-sorted object gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from infra.settings import Settings

__all__ = [
    "Keyring",
    "SignatureError",
    "canonical_json",
    "sign_body",
    "verify_body",
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


@dataclass(frozen=True)
class Keyring:
    """Signing and verification keys by key id; secrets stay inside and are never shown."""

    hmac_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    signing_key_id: str = ""
    ed25519_private: tuple[str, Ed25519PrivateKey] | None = field(default=None, repr=False)
    ed25519_public: Mapping[str, Ed25519PublicKey] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        """Build a keyring from MANIFEST_HMAC_KEY, MANIFEST_VERIFY_KEYS and the Ed25519 keys."""
        hmac_keys = {
            kid: value.encode()
            for kid, value in _parse_pairs(settings.manifest_verify_keys.get_secret_value()).items()
        }
        signing = settings.manifest_hmac_key.get_secret_value()
        if signing:
            hmac_keys[settings.manifest_key_id] = signing.encode()
        private = None
        raw_private = settings.manifest_ed25519_private_key.get_secret_value()
        if raw_private:
            kid, _, b64 = (
                raw_private.partition(":") if ":" in raw_private else ("ed1", "", raw_private)
            )
            private = (kid, Ed25519PrivateKey.from_private_bytes(base64.b64decode(b64)))
        public = {
            kid: Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))
            for kid, b64 in _parse_pairs(settings.manifest_ed25519_public_keys).items()
        }
        if private is not None and private[0] not in public:
            public[private[0]] = private[1].public_key()
        return cls(hmac_keys, settings.manifest_key_id if signing else "", private, public)

    @property
    def can_sign(self) -> bool:
        """Say whether this keyring holds a signing key."""
        return bool(self.signing_key_id) or self.ed25519_private is not None


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
    """Verify every signature made with a known key; return the key id that verified.

    Raise `SignatureError` when there is no signature, when no signature is by a
    known key (`unknown_key_id`), or when any known-key signature fails.
    """
    sigs = list(signatures)
    if not sigs:
        raise SignatureError("unsigned", "the manifest carries no signature")
    payload = canonical_json({k: v for k, v in body.items() if k != "signatures"})
    verified = ""
    unknown = []
    for sig in sigs:
        alg, kid, value = sig.get("alg"), str(sig.get("key_id", "")), str(sig.get("value", ""))
        if alg == "hmac-sha256":
            key = keyring.hmac_keys.get(kid)
            if key is None:
                unknown.append(kid)
                continue
            expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected.encode(), value.encode()):
                raise SignatureError("bad_signature", f"HMAC by key id {kid!r} does not verify")
        elif alg == "ed25519":
            public = keyring.ed25519_public.get(kid)
            if public is None:
                unknown.append(kid)
                continue
            try:
                public.verify(base64.b64decode(value), payload)
            except (InvalidSignature, ValueError):
                raise SignatureError(
                    "bad_signature", f"Ed25519 by key id {kid!r} does not verify"
                ) from None
        else:
            raise SignatureError("unknown_algorithm", f"signature algorithm {alg!r}")
        verified = verified or kid
    if not verified:
        raise SignatureError("unknown_key_id", f"no known key among key ids {unknown}")
    return verified
