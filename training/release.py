"""Releases: ONNX artifacts in the object store, signed manifests, the `models` topic.

Store layout (relative to the object store root, a versioned S3 bucket or a dir):

    models/{family}/{version}/{family}.onnx     one ONNX file per family and version
    models/manifest/{sequence}.json             every manifest ever published
    models/manifest/latest.json                 the newest one (what traders poll)

A manifest's wire form is the JSON of `manifest.model_dump(mode="json", by_alias=True)`
(datetimes as ISO 8601 with `Z`), which is also the form its signatures cover, so
any language can verify the bytes it reads (see docs/readme/training.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import orjson

from features.vectors import MODEL_FEATURES, MODEL_IO
from infra.bus import topic_settings
from infra.contracts import Artifact, GateResult, ModelManifest, Signature, decode, utc_now
from infra.contracts.keys import (
    DEFAULT_MODEL_SET,
    LATEST_MANIFEST_KEY,
    MANIFEST_PREFIX,
    MANIFEST_SEQ_RE,
    artifact_bundle_key,
    artifact_key,
    latest_manifest_key,
    manifest_key,
)
from infra.objectstore import (
    LocalObjectStore,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    object_store,
    s3_client,
)
from infra.settings import Settings
from infra.signing import Keyring, SignatureError, sign_body, verify_body
from training.config import ReleaseError

__all__ = [
    "LATEST_KEY",
    "MANIFEST_PREFIX",
    "Registry",
    "artifact_key",
    "clean_metrics",
    "latest_key",
    "manifest_body",
    "manifest_json",
    "sign_manifest",
    "verify_manifest",
]

log = logging.getLogger(__name__)

LATEST_KEY = LATEST_MANIFEST_KEY


def latest_key(model_set: str = DEFAULT_MODEL_SET) -> str:
    """Return where the newest manifest of a model set lives (`default`: latest.json)."""
    try:
        return latest_manifest_key(model_set)
    except ValueError as exc:
        raise ReleaseError(str(exc)) from None


def clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Return metrics as plain floats, without NaN or infinity (no canonical JSON form)."""
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)
    }


def manifest_body(manifest: ModelManifest) -> dict[str, Any]:
    """Return the signed body: the JSON-mode dump by alias, without `signatures`."""
    body = manifest.model_dump(mode="json", by_alias=True)
    body.pop("signatures", None)
    return body


def manifest_json(manifest: ModelManifest) -> bytes:
    """Return the wire bytes of a manifest (JSON-mode dump; decodable by `decode`)."""
    return orjson.dumps(manifest.model_dump(mode="json", by_alias=True))


def sign_manifest(manifest: ModelManifest, keyring: Keyring) -> ModelManifest:
    """Return the manifest with `key_id` set and its signatures over the canonical body."""
    if not keyring.can_sign:
        raise ReleaseError(
            "no signing key: set MANIFEST_ED25519_PRIVATE_KEY (or MANIFEST_HMAC_KEY)"
        )
    key_id = keyring.signing_key_id or (
        keyring.ed25519_private[0] if keyring.ed25519_private else ""
    )
    unsigned = manifest.model_copy(update={"key_id": key_id, "signatures": ()})
    sigs = sign_body(manifest_body(unsigned), keyring)
    return unsigned.model_copy(update={"signatures": tuple(Signature(**s) for s in sigs)})  # type: ignore[arg-type]


def verify_manifest(manifest: ModelManifest | bytes, keyring: Keyring) -> str:
    """Verify a manifest (or its wire bytes); return the key id that verified.

    Raise `infra.signing.SignatureError` (unsigned, unknown_key_id, bad_signature).
    """
    if isinstance(manifest, bytes | bytearray):
        obj = orjson.loads(manifest)
        sigs = obj.get("signatures") or []
        return verify_body({k: v for k, v in obj.items() if k != "signatures"}, sigs, keyring)
    return verify_body(
        manifest_body(manifest), [s.model_dump() for s in manifest.signatures], keyring
    )


@dataclass(frozen=True)
class Published:
    """Where a release went."""

    manifest: ModelManifest
    manifest_uri: str
    latest_uri: str
    topic: str | None
    topic_offset: int | None
    topic_error: str | None


class Registry:
    """The releases in one object store: artifacts, manifest history, latest, publishing."""

    def __init__(self, settings: Settings, store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.store = store or object_store(settings)

    # reading ------------------------------------------------------------

    def _read(self, key: str) -> ModelManifest | None:
        try:
            raw = self.store.get(key)
        except (ObjectNotFoundError, FileNotFoundError):
            return None
        return decode(raw, ModelManifest)

    def latest(self, model_set: str = "default") -> ModelManifest | None:
        """Return the newest manifest of a model set."""
        return self._read(latest_key(model_set))

    def latest_raw(self, model_set: str = "default") -> bytes | None:
        """Return the bytes of a model set's latest manifest, if any."""
        try:
            return self.store.get(latest_key(model_set))
        except (ObjectNotFoundError, FileNotFoundError):
            return None

    def sequences(self) -> list[int]:
        """Return every sequence number with a manifest in the history, ascending."""
        out = []
        for key in self.store.list(MANIFEST_PREFIX):
            m = MANIFEST_SEQ_RE.match(key)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def history(self) -> list[ModelManifest]:
        """Return every manifest in the history, by sequence."""
        out = []
        for seq in self.sequences():
            m = self._read(manifest_key(seq))
            if m is not None:
                out.append(m)
        return out

    def find(self, ref: str) -> ModelManifest:
        """Return the manifest whose release string or sequence number is `ref`."""
        for m in self.history():
            if m.release == ref or str(m.sequence) == ref:
                return m
        raise ReleaseError(f"no release {ref!r} in {self.store.uri(MANIFEST_PREFIX)}")

    def chain_link(self, model_set: str = DEFAULT_MODEL_SET) -> dict[str, Any]:
        """Return the link a new manifest of the set carries: its previous manifest's sequence and sha256."""
        raw = self.latest_raw(model_set)
        if raw is None:
            return {"previous_sequence": None, "previous_sha256": None}
        previous = decode(raw, ModelManifest)
        return {
            "previous_sequence": previous.sequence,
            "previous_sha256": hashlib.sha256(raw).hexdigest(),
        }

    def verify_chain(self, keyring: Keyring, model_set: str = DEFAULT_MODEL_SET) -> list[str]:
        """Verify every manifest of a model set in the history and the links between them.

        Return one line per manifest; raise `ReleaseError` naming the first that fails
        (a bad signature, or a link to other bytes than the previous manifest's). Manifests
        published before the chain existed carry no link and are reported as such.
        """
        lines: list[str] = []
        previous: tuple[int, str] | None = None
        linked = False
        for seq in self.sequences():
            raw = self.store.get(manifest_key(seq))
            try:
                kid = verify_manifest(raw, keyring)
            except SignatureError as exc:
                raise ReleaseError(f"sequence {seq}: signature: {exc}") from None
            m = decode(raw, ModelManifest)
            if m.model_set != model_set:
                continue
            digest = hashlib.sha256(raw).hexdigest()
            link = (m.previous_sequence, m.previous_sha256)
            if link == (None, None) and not linked and previous is not None:
                lines.append(f"{seq} {m.release}: signed by {kid}, no link (predates the chain)")
            elif link == (None, None) and previous is None:
                lines.append(f"{seq} {m.release}: signed by {kid}, first of {model_set}")
            elif previous is None or link != previous:
                want = f"{previous[0]} {previous[1][:16]}…" if previous else "nothing"
                raise ReleaseError(
                    f"sequence {seq}: chain broken: links to {link[0]} "
                    f"{str(link[1])[:16]}…, the previous manifest is {want}"
                )
            else:
                linked = True
                lines.append(f"{seq} {m.release}: signed by {kid}, links to {link[0]}")
            previous = (seq, digest)
        return lines

    def next_sequence(self) -> int:
        """Return one more than the highest sequence in the history and in latest.json."""
        seqs = self.sequences()
        top = self._read(LATEST_KEY)
        return max([*seqs, top.sequence if top else 0, 0]) + 1

    def fetch(self, art: Artifact) -> bytes:
        """Download an artifact (by URI and version) and check its size and sha256."""
        parsed = urlparse(art.uri)
        try:
            if parsed.scheme == "s3":
                data = S3ObjectStore(s3_client(self.settings), parsed.netloc).get(
                    parsed.path.lstrip("/"), art.s3_version_id
                )
            elif isinstance(self.store, LocalObjectStore) and art.uri.startswith(
                str(self.store.root)
            ):
                key = art.uri[len(str(self.store.root)) :].lstrip("/")
                try:
                    data = self.store.get(key, art.s3_version_id)
                except ObjectNotFoundError:
                    data = self.store.get(key)
            else:
                data = self.store.get(art.uri, art.s3_version_id)
        except (ObjectNotFoundError, FileNotFoundError) as exc:
            raise ReleaseError(f"{art.family}: artifact {art.uri} is missing: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != art.sha256 or len(data) != art.size_bytes:
            raise ReleaseError(f"{art.family}: artifact {art.uri} does not match its sha256/size")
        return data

    # writing ------------------------------------------------------------

    def upload(
        self,
        family: str,
        version: str,
        onnx_bytes: bytes,
        *,
        metrics: Mapping[str, float],
        probe_input: Sequence[float],
        probe_output: Sequence[float],
    ) -> Artifact:
        """Store one ONNX file and return its `Artifact` (URI, version id, sha256, IO)."""
        stored = self.store.put(artifact_key(family, version), onnx_bytes)
        if self.settings.model_signing_key:  # the OpenSSF bundle, for third-party verifiers
            from training.openssf import sign_bundle

            bundle = sign_bundle(family, onnx_bytes, self.settings.model_signing_key)
            self.store.put(artifact_bundle_key(family, version), bundle)
        return Artifact(
            family=family,
            version=version,
            # S3: the bucket's URI; the local store: the key (traders refuse local paths)
            uri=stored.uri if isinstance(self.store, S3ObjectStore) else stored.key,
            s3_version_id=stored.version_id,
            sha256=hashlib.sha256(onnx_bytes).hexdigest(),
            size_bytes=len(onnx_bytes),
            input_names=(MODEL_IO[family]["input"],),
            output_names=(MODEL_IO[family]["output"],),
            feature_names=MODEL_FEATURES[family],
            metrics=clean_metrics(metrics),
            probe_input=tuple(float(v) for v in probe_input),
            probe_output=tuple(float(v) for v in probe_output),
        )

    def publish(self, manifest: ModelManifest, *, topic: bool = True) -> Published:
        """Write the signed manifest to history and latest.json, then to the `models` topic.

        The store is the source of truth (traders poll latest.json); a broker that is
        not configured or not reachable is reported in `topic_error`, not raised.
        """
        if not manifest.signatures:
            raise ReleaseError("refusing to publish an unsigned manifest")
        current = self.latest(manifest.model_set)
        if current is not None and current.sequence >= manifest.sequence:
            raise ReleaseError(
                f"sequence {manifest.sequence} is not newer than the published {current.sequence}"
            )
        link = self.chain_link(manifest.model_set)
        if manifest.previous_sequence is not None or current is not None:
            got = {
                "previous_sequence": manifest.previous_sequence,
                "previous_sha256": manifest.previous_sha256,
            }
            if got != link:
                raise ReleaseError(
                    f"the manifest links to {manifest.previous_sequence}, the latest of "
                    f"{manifest.model_set} is {link['previous_sequence']}: another release "
                    "was published meanwhile"
                )
        body = manifest_json(manifest)
        key = manifest_key(manifest.sequence)
        try:  # claims the sequence: of two trainers at once, exactly one wins it
            hist = self.store.put_new(key, body)
        except ObjectExistsError:
            raise ReleaseError(
                f"{key} already exists: another release took sequence {manifest.sequence}"
            ) from None
        latest = self.store.put(latest_key(manifest.model_set), body)
        topic_name: str | None = None
        offset: int | None = None
        error: str | None = None
        if topic:
            if not self._broker_configured():
                error = "no broker configured (KAFKA_BOOTSTRAP_SERVERS or `tradeloop stack up`)"
            else:
                try:
                    topic_name, offset = asyncio.run(self._send(manifest, body))
                except Exception as exc:  # the store already holds the release
                    error = f"{type(exc).__name__}: {exc}"
            if error:
                log.warning("manifest %s not on the models topic: %s", manifest.release, error)
        return Published(manifest, hist.uri, latest.uri, topic_name, offset, error)

    def _broker_configured(self) -> bool:
        from infra.settings import stack_state

        return bool(self.settings.kafka_bootstrap_servers or (stack_state().get("kafka") or {}))

    async def _send(self, manifest: ModelManifest, body: bytes) -> tuple[str, int]:
        from infra.bus import KafkaBus

        bus = KafkaBus(self.settings)
        await bus.ensure_topics(topic_settings(bus, ["models"]))
        name = bus.topic("models")
        async with bus.producer() as producer:
            _p, offset = await producer.send(name, body, key=manifest.model_set.encode())
        return name, offset


def build_manifest(
    *,
    release: str,
    sequence: int,
    artifacts: Sequence[Artifact],
    model_set: str = "default",
    gate: GateResult | None = None,
    window: tuple[Any, Any] | None = None,
    kind: str = "release",
    rollback_of: str | None = None,
    previous: Mapping[str, Any] | None = None,
) -> ModelManifest:
    """Return an unsigned manifest for a set of artifacts; `previous` is `Registry.chain_link`."""
    fams = sorted(a.family for a in artifacts)
    if len(set(fams)) != len(fams):
        raise ReleaseError(f"duplicate families in a release: {fams}")
    feature_names = tuple(n for a in artifacts if a.family == "meta" for n in a.feature_names)
    return ModelManifest(
        ts_event=utc_now(),
        model_set=model_set,
        release=release,
        sequence=sequence,
        kind=kind,  # type: ignore[arg-type]
        rollback_of=rollback_of,
        artifacts=tuple(sorted(artifacts, key=lambda a: list(MODEL_IO).index(a.family))),
        feature_names=feature_names,
        train_window_start=window[0] if window else None,
        train_window_end=window[1] if window else None,
        gate=gate,
        **dict(previous or {}),
    )


def release_name(sequence: int, when: Any = None) -> str:
    """Return the release string: `r{sequence:06d}-{UTC yyyymmddThhmmssZ}`."""
    ts = when or utc_now()
    return f"r{sequence:06d}-{ts:%Y%m%dT%H%M%SZ}"


def rollback(
    registry: Registry, target: str, keyring: Keyring, *, reason: str = "", topic: bool = True
) -> Published:
    """Publish a signed rollback: a new sequence whose artifacts are an earlier release's."""
    old = registry.find(target)
    current = registry.latest(old.model_set)
    if current is None:
        raise ReleaseError("nothing is released: there is nothing to roll back")
    if current.release == old.release:
        raise ReleaseError(f"{old.release} is already the latest release")
    for art in old.artifacts:  # the bytes must still be there and intact
        registry.fetch(art)
    seq = registry.next_sequence()
    why = f"rollback of {current.release} to {old.release}" + (f": {reason}" if reason else "")
    gate = GateResult(decision="rollback", reasons=(why,))
    manifest = build_manifest(
        release=release_name(seq),
        sequence=seq,
        artifacts=old.artifacts,
        model_set=old.model_set,
        gate=gate,
        window=(old.train_window_start, old.train_window_end),
        kind="rollback",
        rollback_of=current.release,
        previous=registry.chain_link(old.model_set),
    )
    return registry.publish(sign_manifest(manifest, keyring), topic=topic)
