"""Object storage: the local directory and moto's S3 server behave alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.objectstore import (
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    S3ObjectStore,
    object_store,
    store_for_uri,
)
from tests.conftest import SettingsFactory
from tests.helpers import unique


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, make_settings: SettingsFactory, tmp_path: Path
) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    settings = make_settings(kafka=False, s3=True)
    s3 = object_store(settings, prefix=unique("obj"))
    assert isinstance(s3, S3ObjectStore)
    return s3


def test_put_get_versions_list(store: ObjectStore) -> None:
    first = store.put("models/meta/r1/model.onnx", b"one")
    second = store.put("models/meta/r1/model.onnx", b"two")
    assert first.version_id and second.version_id and first.version_id != second.version_id
    assert store.get("models/meta/r1/model.onnx") == b"two"
    assert store.get("models/meta/r1/model.onnx", first.version_id) == b"one"
    store.put("models/exec/r1/model.onnx", b"x")
    assert store.list("models/") == ["models/exec/r1/model.onnx", "models/meta/r1/model.onnx"]
    assert store.exists("models/exec/r1/model.onnx") and not store.exists("models/nope")
    with pytest.raises(ObjectNotFoundError):
        store.get("models/nope")
    assert second.uri == store.uri("models/meta/r1/model.onnx")


def test_local_store_refuses_escaping_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        LocalObjectStore(tmp_path).put("../outside", b"x")


def test_store_for_uri(tmp_path: Path, make_settings: SettingsFactory) -> None:
    assert isinstance(store_for_uri(str(tmp_path)), LocalObjectStore)
    settings = make_settings(kafka=False, s3=True)
    s3 = store_for_uri(settings.lake, settings)
    assert isinstance(s3, S3ObjectStore) and s3.uri("a").startswith(f"s3://{settings.bucket}/")
    with pytest.raises(ValueError, match="unsupported"):
        store_for_uri("ftp://x/y")


def test_default_store_is_a_local_directory(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings(kafka=False)
    assert not settings.uses_s3
    assert isinstance(object_store(settings), LocalObjectStore)
