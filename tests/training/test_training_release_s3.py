"""A release on the real services: moto's versioned S3 and the Tansu `models` topic."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from infra.bus import KafkaBus
from infra.contracts import ModelManifest, decode
from infra.contracts.keys import manifest_key
from infra.lake import read_topic
from infra.objectstore import s3_client, store_for_uri
from infra.offsets import read_topics_to_end
from infra.signing import Keyring, generate_ed25519
from tests.hotswap_support import build_blobs, upload
from tests.kit.lake import write_synthetic_lake
from trader.delivery.release import verify_release
from training.config import ReleaseError, TrainConfig
from training.datasets import load_lake
from training.pipeline import run_training
from training.release import (
    Registry,
    build_manifest,
    manifest_json,
    release_name,
    rollback,
    sign_manifest,
    verify_manifest,
)

pytestmark = [pytest.mark.s3, pytest.mark.kafka]


async def _consume_models(bus: KafkaBus, n: int) -> list[tuple[bytes | None, bytes]]:
    """Return every record of the `models` topic (read to its true end, no consumer group).

    `publish` returns once the broker acknowledged the manifest, so it is there to read.
    """
    out: list[tuple[bytes | None, bytes]] = []
    await read_topics_to_end(
        bus, [bus.topic("models")], lambda msgs: out.extend((m.key, m.value or b"") for m in msgs)
    )
    assert len(out) >= n, out
    return out


def test_release_to_versioned_s3_and_the_models_topic(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(kafka=True, s3=True, TRAIN_PROFILE="small")
    lake_store = store_for_uri(settings.lake, settings)
    written = write_synthetic_lake(lake_store, 1500, seed=31)
    assert read_topic(settings.lake, "signals", settings=settings).num_rows == written.signals
    cfg = TrainConfig.for_profile("small")
    frames = load_lake("real", settings.lake, settings)
    result = run_training(settings, cfg, lakes=[("real", frames)], pit_engine="asof")
    assert result.status == "released", result.message
    pub = result.published
    assert pub is not None and pub.topic == settings.topic("models") and pub.topic_error is None
    m = pub.manifest
    assert pub.latest_uri == f"s3://{settings.bucket}/models/manifest/latest.json"
    client = s3_client(settings)
    for art in m.artifacts:
        assert (
            art.uri == f"s3://{settings.bucket}/models/{art.family}/{m.release}/{art.family}.onnx"
        )
        assert art.s3_version_id  # the bucket is versioned
        head = client.head_object(
            Bucket=settings.bucket, Key=art.uri.split("/", 3)[3], VersionId=art.s3_version_id
        )
        assert head["ContentLength"] == art.size_bytes
    # the manifest on the compacted topic, keyed by model set, is the signed latest.json
    bus = KafkaBus(settings)
    records = asyncio.run(_consume_models(bus, 1))
    assert records[0][0] == b"default"
    raw = records[0][1]
    reg = Registry(settings)
    assert raw == reg.latest_raw()
    keyring = Keyring.from_settings(settings)
    assert verify_manifest(raw, keyring) == "k1"
    on_topic = decode(raw, ModelManifest)
    assert on_topic.release == m.release and on_topic.sequence == 1
    manifest, _models = verify_release(raw, 0, keyring, settings)
    assert manifest.release == m.release
    # a second release (the same artifacts re-published), then a rollback to the first:
    # each is a new signed manifest on the topic; every S3 version stays readable
    again = build_manifest(
        release=release_name(2),
        sequence=reg.next_sequence(),
        artifacts=m.artifacts,
        gate=m.gate,
        previous=reg.chain_link(),
    )
    assert reg.publish(sign_manifest(again, keyring)).manifest.sequence == 2
    back = rollback(reg, m.release, keyring, reason="test")
    assert back.manifest.sequence == 3 and back.topic_error is None
    assert back.manifest.rollback_of == again.release
    records = asyncio.run(_consume_models(bus, 3))
    assert [decode(v, ModelManifest).sequence for _k, v in records] == [1, 2, 3]
    assert decode(records[-1][1], ModelManifest).kind == "rollback"
    versions = client.list_object_versions(
        Bucket=settings.bucket, Prefix="models/manifest/latest.json"
    )
    assert len(versions["Versions"]) == 3
    for art in back.manifest.artifacts:
        assert reg.fetch(art)  # the rolled-back bytes by version id, sha256 checked
    verify_release(reg.latest_raw() or b"", 2, keyring, settings)
    topics = asyncio.run(bus.list_topics())
    assert settings.topic("models") in topics


def _publish_as_trainer(reg: Registry, keyring: Keyring, artifacts: Any, name: str) -> Any:
    """Do what a trainer does: pick the next sequence, link, sign and publish."""
    seq = reg.next_sequence()
    manifest = build_manifest(
        release=f"{name}-{seq}", sequence=seq, artifacts=artifacts, previous=reg.chain_link()
    )
    return reg.publish(sign_manifest(manifest, keyring), topic=False)


def test_two_trainers_at_once_never_share_a_sequence(make_settings) -> None:  # type: ignore[no-untyped-def]
    """Old code checked `exists` then wrote: both trainers could write sequence N."""
    settings = make_settings(kafka=False, s3=True)
    reg = Registry(settings)
    keyring = Keyring.from_settings(settings)
    arts = upload(settings, build_blobs(1), "v1")
    first = _publish_as_trainer(reg, keyring, arts, "first")
    assert first.manifest.sequence == 1
    rounds = 6
    for _ in range(rounds):
        barrier = threading.Barrier(2)
        outcomes: list[Any] = []

        def trainer(
            name: str, barrier: threading.Barrier = barrier, outcomes: list[Any] = outcomes
        ) -> None:
            own = Registry(settings)  # each trainer has its own client
            seq = own.next_sequence()
            link = own.chain_link()
            barrier.wait()  # both have read the same latest: both want `seq`
            manifest = build_manifest(
                release=f"{name}-{seq}", sequence=seq, artifacts=arts, previous=link
            )
            try:
                outcomes.append(own.publish(sign_manifest(manifest, keyring), topic=False))
            except ReleaseError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=trainer, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        won = [o for o in outcomes if not isinstance(o, Exception)]
        lost = [o for o in outcomes if isinstance(o, ReleaseError)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        # refused by the conditional write, or (if the winner finished first) as not newer
        assert "another release took sequence" in str(lost[0]) or "not newer" in str(lost[0])
        assert reg.latest() == won[0].manifest  # the loser wrote nothing
    history = reg.history()
    assert [m.sequence for m in history] == list(range(1, rounds + 2))
    # every manifest links to the one before it: the chain verifies whole
    lines = reg.verify_chain(keyring)
    assert len(lines) == rounds + 1 and "links to" in lines[-1]


def test_models_verify_chain_finds_a_broken_link(make_settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from infra.settings import get_settings, settings_env
    from training.cli import models

    private, public = generate_ed25519()
    trainer = make_settings(
        kafka=False, s3=True, MANIFEST_HMAC_KEY="", MANIFEST_ED25519_PRIVATE_KEY=f"ed1:{private}"
    )
    reg = Registry(trainer)
    keyring = Keyring.from_settings(trainer)
    arts = upload(trainer, build_blobs(1), "v1")
    for name in ("a", "b", "c"):
        _publish_as_trainer(reg, keyring, arts, name)
    # `models verify` needs nothing but the public key
    env = settings_env(trainer)
    env.pop("MANIFEST_ED25519_PRIVATE_KEY", None)
    env["MANIFEST_ED25519_PUBLIC_KEYS"] = f"ed1:{public}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MANIFEST_ED25519_PRIVATE_KEY", raising=False)
    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(models, ["verify", "--chain"])
        assert out.exit_code == 0, out.output
        assert "chain ok: 3 manifests" in out.output
        out = CliRunner().invoke(models, ["verify"])
        assert out.exit_code == 0, out.output
        assert "signature ok (key id ed1)" in out.output and "probe ok" in out.output
        # a validly signed manifest whose link skips its predecessor breaks the chain
        seq = reg.next_sequence()
        forked = build_manifest(
            release=f"fork-{seq}",
            sequence=seq,
            artifacts=arts,
            previous={"previous_sequence": 1, "previous_sha256": "0" * 64},
        )
        reg.store.put_new(manifest_key(seq), manifest_json(sign_manifest(forked, keyring)))
        out = CliRunner().invoke(models, ["verify", "--chain"])
        assert out.exit_code != 0 and f"sequence {seq}: chain broken" in out.output
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_a_conditional_write_has_exactly_one_winner(make_settings, backend: str) -> None:  # type: ignore[no-untyped-def]
    """S3 `If-None-Match: *` (moto) and the local store's hard link: one of 8 writers wins."""
    from infra.objectstore import ObjectExistsError, object_store

    settings = make_settings(kafka=False, s3=backend == "s3")
    barrier = threading.Barrier(8)
    won: list[bytes] = []
    lost: list[Exception] = []

    def writer(i: int) -> None:
        store = object_store(settings)
        barrier.wait()
        try:
            store.put_new(manifest_key(7), f"writer {i}".encode())
            won.append(f"writer {i}".encode())
        except ObjectExistsError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(lost) == 7
    assert object_store(settings).get(manifest_key(7)) == won[0]
