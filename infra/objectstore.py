"""Object storage behind one small interface: S3 (boto3) or a local directory."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from infra.settings import Settings, get_settings

__all__ = [
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "S3ObjectStore",
    "StoredObject",
    "object_store",
    "store_for_uri",
]


class ObjectNotFoundError(FileNotFoundError):
    """Raise when a key (or a version of it) does not exist."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """Where a written object lies and which version the write created."""

    uri: str
    key: str
    version_id: str | None
    size_bytes: int


class ObjectStore(Protocol):
    """The verbs every backend offers."""

    def put(self, key: str, data: bytes) -> StoredObject: ...
    def get(self, key: str, version_id: str | None = None) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def uri(self, key: str) -> str: ...


class LocalObjectStore:
    """A directory; every put also keeps an immutable copy under `.versions/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"key {key!r} escapes the store root")
        return path

    def put(self, key: str, data: bytes) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        version = f"{time.time_ns():020d}-{hashlib.sha256(data).hexdigest()[:12]}"
        vpath = self.root / ".versions" / key.lstrip("/") / version
        vpath.parent.mkdir(parents=True, exist_ok=True)
        for target in (vpath, path):
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return StoredObject(self.uri(key), key, version, len(data))

    def get(self, key: str, version_id: str | None = None) -> bytes:
        path = (
            self.root / ".versions" / key.lstrip("/") / version_id
            if version_id
            else self._path(key)
        )
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{self.uri(key)} (version {version_id})") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root
        if not base.exists():
            return []
        out = []
        for path in base.rglob("*"):
            rel = path.relative_to(base).as_posix()
            hidden = rel.startswith(".versions/") or path.name.startswith(".")
            if path.is_file() and not hidden and rel.startswith(prefix):
                out.append(rel)
        return sorted(out)

    def uri(self, key: str) -> str:
        return str(self._path(key))


class S3ObjectStore:
    """An S3 bucket (AWS, MinIO or moto) through boto3."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> StoredObject:
        full = self._key(key)
        resp = self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        return StoredObject(self.uri(key), key, resp.get("VersionId"), len(data))

    def get(self, key: str, version_id: str | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            return bytes(self.client.get_object(**kwargs)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            raise ObjectNotFoundError(self.uri(key)) from None
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "NoSuchVersion", "404", "InvalidArgument"}:
                raise ObjectNotFoundError(f"{self.uri(key)} (version {version_id})") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self.client.exceptions.ClientError:
            return False

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            out.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(out)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def s3_client(settings: Settings | None = None, **config: Any) -> Any:
    """Return a boto3 S3 client for the configured endpoint and credentials."""
    import boto3
    from botocore.config import Config

    s = settings or get_settings()
    kwargs: dict[str, Any] = {
        "region_name": s.aws_region,
        "config": Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=config.pop("connect_timeout", 5),
            read_timeout=config.pop("read_timeout", 30),
            **config,
        ),
    }
    if s.s3_endpoint:
        kwargs["endpoint_url"] = s.s3_endpoint
    key_id = s.aws_access_key_id.get_secret_value()
    secret = s.aws_secret_access_key.get_secret_value()
    if key_id and secret:
        kwargs["aws_access_key_id"] = key_id
        kwargs["aws_secret_access_key"] = secret
    elif s.s3_endpoint:
        # moto and a local MinIO accept any credentials; never fall back to real ones.
        kwargs["aws_access_key_id"] = "testing"
        kwargs["aws_secret_access_key"] = "testing"
    return boto3.client("s3", **kwargs)


def object_store(settings: Settings | None = None, prefix: str = "") -> ObjectStore:
    """Return the configured store: the S3 bucket, else the local directory."""
    s = settings or get_settings()
    if s.uses_s3:
        return S3ObjectStore(s3_client(s), s.bucket, prefix)
    root = s.store_root / prefix if prefix else s.store_root
    return LocalObjectStore(root)


def store_for_uri(uri: str, settings: Settings | None = None) -> ObjectStore:
    """Return a store rooted at `s3://bucket/prefix` or at a local path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3ObjectStore(s3_client(settings), parsed.netloc, parsed.path.strip("/"))
    if parsed.scheme in ("", "file"):
        return LocalObjectStore(parsed.path if parsed.scheme == "file" else uri)
    raise ValueError(f"unsupported store URI {uri!r}: use s3://bucket/prefix or a local path")
