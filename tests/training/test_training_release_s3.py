"""A release on the real services: moto's versioned S3 and the Tansu `models` topic."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from infra.bus import KafkaBus
from infra.contracts import ModelManifest, decode
from infra.lake import read_topic
from infra.objectstore import s3_client, store_for_uri
from infra.signing import Keyring
from tests.kit.lake import write_synthetic_lake
from trader.delivery.release import verify_release
from training.config import TrainConfig
from training.datasets import load_lake
from training.pipeline import run_training
from training.release import (
    Registry,
    build_manifest,
    release_name,
    rollback,
    sign_manifest,
    verify_manifest,
)

pytestmark = [pytest.mark.s3, pytest.mark.kafka]


async def _consume_models(bus: KafkaBus, n: int) -> list[tuple[bytes | None, bytes]]:
    consumer = bus.consumer([bus.topic("models")], group_id=f"g{uuid.uuid4().hex[:8]}")
    out: list[tuple[bytes | None, bytes]] = []
    async with consumer:
        for _ in range(100):
            for rec in await consumer.poll(timeout_ms=500):
                out.append((rec.key, rec.value or b""))
            if len(out) >= n:
                break
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
        release=release_name(2), sequence=reg.next_sequence(), artifacts=m.artifacts, gate=m.gate
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
