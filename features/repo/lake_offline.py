"""A Feast offline store for the event lake: Feast's dask store with a lake reader.

Feast's file/dask store reads `s3://` paths through s3fs, which is not installed
(it would pin botocore below the version boto3 needs). This store keeps every
behaviour of the dask store (point-in-time joins, materialisation) and reads lake
directories itself with pyarrow (`pyarrow.fs.S3FileSystem` with the endpoint
override for MinIO/moto, or the local filesystem), ignoring the hive directory
names because every lake file carries its own `date` and `symbol` columns.

Select it in `feature_store.yaml` with
`offline_store: {type: features.repo.lake_offline.LakeOfflineStore}`.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import dask.dataframe as dd
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs
from feast.infra.offline_stores import dask as _dask
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig

from infra.lake import schema_for

__all__ = ["LakeOfflineStore", "LakeOfflineStoreConfig", "read_lake_dataset"]

TYPE = "features.repo.lake_offline.LakeOfflineStore"


class LakeOfflineStoreConfig(DaskOfflineStoreConfig):
    """Config of the lake offline store (the dask store's, with a new type name)."""

    type: Literal["features.repo.lake_offline.LakeOfflineStore"] = TYPE  # type: ignore[assignment]
    lake_uri: str = ""
    """The event lake root (`s3://bucket/prefix` or an absolute directory)."""
    s3_endpoint_override: str = ""
    """An S3 endpoint such as MinIO or moto (empty for AWS)."""


class LakeOfflineStore(DaskOfflineStore):
    """Feast's dask offline store reading the event lake with pyarrow."""


def _filesystem(uri: str, endpoint: str) -> tuple[pafs.FileSystem, str]:
    if uri.startswith("s3://"):
        kwargs: dict[str, Any] = {"region": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs["endpoint_override"] = host or endpoint
            kwargs["scheme"] = scheme if host else "https"
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if key and secret:
            kwargs["access_key"], kwargs["secret_key"] = key, secret
        elif endpoint:
            kwargs["access_key"], kwargs["secret_key"] = "testing", "testing"
        return pafs.S3FileSystem(**kwargs), uri[len("s3://") :]
    return pafs.LocalFileSystem(), uri.removeprefix("file://")


def read_lake_dataset(uri: str, endpoint: str = "", timestamp_field: str = "") -> pa.Table:
    """Read every parquet file under a lake topic directory (empty table if none).

    Rows whose `timestamp_field` is null belong to another view of the same dataset
    (the `features` topic holds three views) and are left out.
    """
    fs, path = _filesystem(uri, endpoint)
    topic = path.rstrip("/").rsplit("/", 1)[-1]
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return schema_for(topic).empty_table()
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    files = sorted(
        f.path
        for f in fs.get_file_info(selector)
        if f.type == pafs.FileType.File and f.path.endswith(".parquet")
    )
    if not files:
        return schema_for(topic).empty_table()
    dataset = pds.dataset(files, filesystem=fs, format="parquet", partitioning=None)
    if timestamp_field and timestamp_field in dataset.schema.names:
        return dataset.to_table(filter=pds.field(timestamp_field).is_valid())
    return dataset.to_table()


_original_read = _dask._read_datasource


def _read_datasource(data_source: Any, repo_path: Any) -> dd.DataFrame:
    uri = data_source.file_options.uri
    if uri.endswith(".parquet") and not uri.startswith("s3://"):
        return _original_read(data_source, repo_path)
    table = read_lake_dataset(
        uri,
        data_source.file_options.s3_endpoint_override or "",
        data_source.timestamp_field or "",
    )
    return dd.from_pandas(table.to_pandas(), npartitions=1, sort=False)


_dask._read_datasource = _read_datasource
