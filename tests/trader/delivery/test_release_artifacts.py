"""Where artifacts may come from and how large they may be: `bad_uri`, `too_large`, the CDN.

The CDN is a real HTTPS server on loopback with a certificate made for the test
(trusted through `SSL_CERT_FILE`); S3 is moto's server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.contracts import Artifact
from infra.objectstore import LocalObjectStore, ObjectNotFoundError, ObjectTooLargeError
from infra.settings import Settings
from infra.signing import Keyring
from tests.hotswap_support import build_blobs, release_bytes
from trader.delivery.release import ReleaseRejected, check_manifest, verify_release


def _keyring(settings: Settings) -> Keyring:
    return Keyring.from_settings(settings)


def _with_uri(family: str, uri: str, **more: object) -> Callable[[list[Artifact]], list[Artifact]]:
    def mutate(arts: list[Artifact]) -> list[Artifact]:
        return [
            a.model_copy(update={"uri": uri, **more}) if a.family == family else a for a in arts
        ]

    return mutate


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("file:///etc/passwd", "no key of the release store"),
        ("/etc/passwd", "no key of the release store"),
        ("models/meta/v2/../../../../etc/passwd", "`..`"),
        ("models/exec/v2/model.onnx", "does not lie under models/meta/v2/"),
        ("lake/bars/part-0.parquet", "does not lie under"),
        ("http://cdn.example/models/meta.onnx", "no key of the release store"),
        ("https://cdn.example/models/meta.onnx", "no HTTPS CDN_BASE_URL"),
        ("models/meta/v2/%2e%2e/x.onnx", "percent escape"),
    ],
)
def test_a_uri_outside_the_release_prefix_is_a_bad_uri(
    make_settings: Callable[..., Settings], uri: str, why: str
) -> None:
    """Old: file://, absolute paths and any key of the store were fetched (the sha256 decided)."""
    settings = make_settings(kafka=False)
    raw = release_bytes(settings, 2, mutate=_with_uri("meta", uri))
    with pytest.raises(ReleaseRejected) as err:
        check_manifest(raw, 1, _keyring(settings), settings=settings)
    assert err.value.code == "bad_uri" and why in err.value.detail


@pytest.mark.s3
def test_another_bucket_or_an_unpinned_key_is_a_bad_uri(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(kafka=False, s3=True)
    other = "s3://someone-elses-bucket/models/meta/v2/model.onnx"
    for mutate, why in (
        (_with_uri("meta", other), "not in the release bucket"),
        (
            _with_uri(
                "meta", f"s3://{settings.bucket}/models/meta/v2/model.onnx", s3_version_id=None
            ),
            "pinned",
        ),
    ):
        raw = release_bytes(settings, 2, mutate=mutate)
        with pytest.raises(ReleaseRejected) as err:
            verify_release(raw, 1, _keyring(settings), settings)
        assert err.value.code == "bad_uri" and why in err.value.detail


def test_the_local_store_never_reads_outside_its_root(tmp_path: Path) -> None:
    """Old: `get(key, version_id)` joined the version id unchecked (`../../secret`)."""
    root = tmp_path / "store"
    store = LocalObjectStore(root)
    stored = store.put("models/meta/v1/model.onnx", b"onnx")
    (tmp_path / "secret").write_text("not yours")
    assert store.get("models/meta/v1/model.onnx", stored.version_id) == b"onnx"
    for key, version in (
        ("models/meta/v1/model.onnx", "../../../../../secret"),
        ("../../secret", stored.version_id),
        ("models/meta/v1/model.onnx", "/etc/passwd"),
    ):
        with pytest.raises((ValueError, ObjectNotFoundError)):
            store.get(key, version)
    with pytest.raises(ValueError):
        store.get("../secret")


def test_a_declared_size_over_the_limit_is_too_large(
    make_settings: Callable[..., Settings],
) -> None:
    """Old: no limit: a manifest could make a trader download any number of bytes."""
    blobs = build_blobs(2)
    limit = min(len(b) for b in blobs.values()) - 1
    settings = make_settings(kafka=False, MAX_ARTIFACT_BYTES=str(limit))
    raw = release_bytes(settings, 2, blobs=blobs)
    with pytest.raises(ReleaseRejected) as err:
        check_manifest(raw, 1, _keyring(settings), settings=settings)
    assert err.value.code == "too_large" and "MAX_ARTIFACT_BYTES" in err.value.detail


@pytest.mark.parametrize("s3", [False, True], ids=["local", "s3"])
def test_a_download_is_cut_at_the_limit(make_settings: Callable[..., Settings], s3: bool) -> None:
    """The manifest declares a small size; the pinned object is larger than the limit."""
    blobs = build_blobs(2)
    limit = 200
    settings = make_settings(kafka=False, s3=s3, MAX_ARTIFACT_BYTES=str(limit))
    assert len(blobs["meta"]) > limit

    def small(arts: list[Artifact]) -> list[Artifact]:
        return [a.model_copy(update={"size_bytes": 100}) for a in arts]

    raw = release_bytes(settings, 2, blobs=blobs, mutate=small)
    with pytest.raises(ReleaseRejected) as err:
        verify_release(raw, 1, _keyring(settings), settings)
    assert err.value.code == "too_large" and "200" in err.value.detail
    if not s3:
        store = LocalObjectStore(settings.store_root)
        with pytest.raises(ObjectTooLargeError):
            store.get("models/meta/v2/model.onnx", max_bytes=limit)


# the CDN ----------------------------------------------------------------------------------


class _Cdn:
    """An HTTPS file server on loopback serving `files` (path -> bytes)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.files: dict[str, bytes] = {}
        files = self.files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}/cdn/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def _certificate(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cdn.pem", tmp / "cdn.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def cdn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Cdn]:
    cert, key = _certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test's certificate only
    server = _Cdn(cert, key)
    try:
        yield server
    finally:
        server.close()


def test_artifacts_from_the_cdn_are_checked_by_their_signed_sha256(
    make_settings: Callable[..., Settings], cdn: _Cdn
) -> None:
    """Old: an https URI was an `unsupported artifact URI scheme` (missing_artifact)."""
    settings = make_settings(kafka=False, CDN_BASE_URL=cdn.base)
    blobs = build_blobs(4)
    for family, blob in blobs.items():
        cdn.files[f"/cdn/{family}/v4/{hashlib.sha256(blob).hexdigest()}.onnx"] = blob

    def on_cdn(arts: list[Artifact]) -> list[Artifact]:
        return [
            a.model_copy(
                update={"uri": f"{cdn.base}{a.family}/v4/{a.sha256}.onnx", "s3_version_id": None}
            )
            for a in arts
        ]

    raw = release_bytes(settings, 4, blobs=blobs, mutate=on_cdn)
    manifest, models = verify_release(raw, 3, _keyring(settings), settings)
    assert manifest.sequence == 4 and models.families == ("meta", "exec", "sizer")
    # the CDN is untrusted: other bytes under the signed URI fail the sha256
    meta = manifest.artifacts[0]
    evil = bytearray(blobs["meta"])
    evil[20] ^= 0x01
    cdn.files[meta.uri.removeprefix(cdn.base.removesuffix("/cdn/"))] = bytes(evil)
    with pytest.raises(ReleaseRejected) as err:
        verify_release(raw, 3, _keyring(settings), settings)
    assert err.value.code == "sha_mismatch"
    # and a URI beside CDN_BASE_URL on the same host is no CDN URI
    beside = release_bytes(
        settings,
        5,
        mutate=_with_uri("meta", cdn.base.replace("/cdn/", "/other/x.onnx"), s3_version_id=None),
    )
    with pytest.raises(ReleaseRejected) as err:
        check_manifest(beside, 4, _keyring(settings), settings=settings)
    assert err.value.code == "bad_uri"
