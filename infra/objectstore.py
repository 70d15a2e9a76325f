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
    "ObjectExistsError",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLargeError",
    "S3ObjectStore",
    "StoredObject",
    "object_store",
    "store_for_uri",
]


class ObjectNotFoundError(FileNotFoundError):
    """Raise when a key (or a version of it) does not exist."""


class ObjectExistsError(FileExistsError):
    """Raise when a conditional write finds the key already taken."""


class ObjectTooLargeError(ValueError):
    """Raise when an object is larger than the most a reader accepts (`max_bytes`)."""


def _read_limited(stream: Any, what: str, max_bytes: int | None) -> bytes:
    """Read a file-like object to its end, or to one byte past `max_bytes` and raise."""
    if max_bytes is None:
        return bytes(stream.read())
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(1 << 20, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(bytes(chunk))
        total += len(chunk)
        if total > max_bytes:
            raise ObjectTooLargeError(f"{what} is larger than {max_bytes} bytes")


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
    def put_new(self, key: str, data: bytes) -> StoredObject: ...
    def get(
        self, key: str, version_id: str | None = None, *, max_bytes: int | None = None
    ) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def uri(self, key: str) -> str: ...


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


class LocalObjectStore:
    """A directory; every put also keeps an immutable copy under `.versions/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"key {key!r} escapes the store root")
        return path

    def _version_path(self, key: str, version_id: str) -> Path:
        base = (self.root / ".versions").resolve()
        path = (base / key.lstrip("/") / version_id).resolve()
        if base not in path.parents or "/" in version_id or version_id in (".", ".."):
            raise ValueError(f"version {version_id!r} of {key!r} escapes the store root")
        return path

    def _new_version(self, key: str, data: bytes) -> tuple[str, Path]:
        version = f"{time.time_ns():020d}-{hashlib.sha256(data).hexdigest()[:12]}"
        vpath = self._version_path(key, version)
        vpath.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(vpath, data)
        return version, vpath

    def put(self, key: str, data: bytes) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        version, _vpath = self._new_version(key, data)
        _write_atomic(path, data)
        return StoredObject(self.uri(key), key, version, len(data))

    def put_new(self, key: str, data: bytes) -> StoredObject:
        """Write a key that must not exist yet (a hard link: atomic, all or nothing).

        Raise `ObjectExistsError` when another writer has it already.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.new")
        _write_atomic(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ObjectExistsError(f"{self.uri(key)} already exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        version, _vpath = self._new_version(key, data)
        return StoredObject(self.uri(key), key, version, len(data))

    def get(
        self, key: str, version_id: str | None = None, *, max_bytes: int | None = None
    ) -> bytes:
        """Return the bytes of a key (or one version of it); never read outside the root."""
        path = self._version_path(key, version_id) if version_id else self._path(key)
        try:
            with path.open("rb") as fh:
                return _read_limited(fh, self.uri(key), max_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
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

    def put_new(self, key: str, data: bytes) -> StoredObject:
        """Write a key that must not exist yet (`If-None-Match: *`).

        Raise `ObjectExistsError` when another writer has it already.
        """
        full = self._key(key)
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
        except self.client.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                raise ObjectExistsError(f"{self.uri(key)} already exists") from None
            raise
        return StoredObject(self.uri(key), key, resp.get("VersionId"), len(data))

    def get(
        self, key: str, version_id: str | None = None, *, max_bytes: int | None = None
    ) -> bytes:
        """Return the bytes of a key (or one version), streamed and cut at `max_bytes`."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            resp = self.client.get_object(**kwargs)
            size = resp.get("ContentLength")
            if max_bytes is not None and isinstance(size, int) and size > max_bytes:
                resp["Body"].close()
                raise ObjectTooLargeError(f"{self.uri(key)} has {size} bytes (> {max_bytes})")
            return _read_limited(resp["Body"], self.uri(key), max_bytes)
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
            retries={"total_max_attempts": s.s3_max_attempts, "mode": "standard"},
            connect_timeout=config.pop("connect_timeout", s.s3_connect_timeout_ms / 1000),
            read_timeout=config.pop("read_timeout", s.s3_read_timeout_ms / 1000),
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
