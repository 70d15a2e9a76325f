"""Read a manifest's bytes and verify its signatures: the verified manifest, or a rejection.

The signatures cover the canonical JSON (`infra.signing.canonical_json`) of the JSON
object exactly as received, without `signatures`. The decoded manifest must then
re-serialise to that very object (`model_dump(mode="json", exclude_unset=True)`; a
timestamp may spell UTC `Z` or `+00:00`), so no value the models would coerce
(`"sequence": "2"`), drop or fill in can differ from what was signed; unknown fields
are refused by the contract (`extra="forbid"`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from infra.contracts import EventDecodeError, ModelManifest, decode
from infra.signing import Keyring, SignatureError, canonical_json, verify_body

__all__ = ["ReleaseRejected", "peek_sequence", "verified_manifest"]


class ReleaseRejected(Exception):
    """Raise when a release fails a check; `code` names which (see `REJECTION_CODES`).

    `release` and `sequence` are those of the manifest; when the signature did not
    verify they are only what the bytes claim (`claimed` is True). `detail` never
    contains key material or signature values.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        release: str = "",
        sequence: int | None = None,
        claimed: bool = False,
    ) -> None:
        self.code = code
        self.detail = detail
        self.release = release
        self.sequence = sequence
        self.claimed = claimed
        super().__init__(f"{code}: {detail}")


def _claimed(obj: Mapping[str, Any], code: str, detail: str) -> ReleaseRejected:
    """Return a rejection naming the release and sequence the unverified body claims."""
    release = obj.get("release")
    sequence = obj.get("sequence")
    return ReleaseRejected(
        code,
        detail,
        release=release[:200] if isinstance(release, str) else "",
        sequence=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
        claimed=True,
    )


@dataclass(frozen=True, slots=True)
class _Parsed:
    obj: dict[str, Any]
    signatures: list[Mapping[str, Any]]


def _parse(raw: bytes) -> _Parsed:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ReleaseRejected("malformed", f"not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ReleaseRejected("malformed", f"expected a JSON object, got {type(obj).__name__}")
    sigs = obj.get("signatures", [])
    if sigs is None:
        sigs = []
    if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
        raise ReleaseRejected("malformed", "'signatures' is not a list of objects")
    return _Parsed(obj, sigs)


def _safe_detail(exc: SignatureError) -> str:
    """Return the error text without its code prefix (it names key ids, never keys)."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


_SIGNATURE_CODES = frozenset({"unsigned", "unknown_key_id", "downgrade"})
_TIMESTAMPS = ("ts_event", "ts_init", "train_window_start", "train_window_end")


def _same_instant(text: object, value: datetime | None) -> bool:
    if not isinstance(text, str) or value is None:
        return False
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return False
    return parsed.tzinfo is not None and parsed == value


def verified_manifest(raw: bytes, keyring: Keyring) -> ModelManifest:
    """Verify a manifest's signatures over the bytes received; return it decoded.

    Raise `ReleaseRejected`: `malformed`, `unsigned`, `downgrade`, `unknown_key_id`,
    `bad_signature`, `invalid_manifest` (it does not decode, or does not re-serialise
    to the signed body).
    """
    parsed = _parse(raw)
    obj = parsed.obj
    body = {k: v for k, v in obj.items() if k != "signatures"}
    try:
        verify_body(body, parsed.signatures, keyring)
    except SignatureError as exc:
        code = exc.code if exc.code in _SIGNATURE_CODES else "bad_signature"
        raise _claimed(obj, code, _safe_detail(exc)) from None
    except (TypeError, ValueError) as exc:  # a value with no canonical JSON form
        raise _claimed(obj, "malformed", f"no canonical JSON form: {exc}") from None
    try:
        manifest = decode(raw, ModelManifest)
    except EventDecodeError as exc:
        raise _claimed(obj, "invalid_manifest", str(exc)) from None
    again = manifest.model_dump(mode="json", by_alias=True, exclude_unset=True)
    again.pop("signatures", None)
    for name in _TIMESTAMPS:  # `+00:00` and `Z` spell the same instant
        if _same_instant(body.get(name), getattr(manifest, name)):
            again[name] = body[name]
    if canonical_json(again) != canonical_json(body):
        fields = sorted(k for k in set(body) | set(again) if body.get(k) != again.get(k))
        raise _claimed(
            obj,
            "invalid_manifest",
            f"the signed body does not re-serialise to itself (types coerced in {fields[:5]})",
        )
    return manifest


def peek_sequence(raw: bytes) -> int:
    """Return the claimed (unverified) sequence of a manifest, or 0; only to order candidates."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0
    seq = obj.get("sequence") if isinstance(obj, dict) else None
    return seq if isinstance(seq, int) else 0
