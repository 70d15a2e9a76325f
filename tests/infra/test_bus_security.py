"""Kafka TLS and SASL/SCRAM: the settings reach every client the bus builds and the
Faust app, incomplete settings fail early, and a refused SASL connection says so."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.bus import KafkaBus
from infra.kafka_connection import (
    BrokerUnavailableError,
    KafkaAuthError,
    KafkaConnection,
    KafkaSecurityError,
)
from infra.settings import KafkaSettings, Settings
from infra.stack import free_port, tansu_binary, wait_port

PASSWORD = "scram-pw-not-shown"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """Write a CA certificate and its key (PEM); return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tradeloop-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _sasl_ssl(tmp_path: Path, **extra: Any) -> KafkaSettings:
    ca, key = _self_signed(tmp_path)
    return KafkaSettings(
        KAFKA_BOOTSTRAP_SERVERS="kafka.internal:9093",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="trader",
        KAFKA_SASL_PASSWORD=PASSWORD,
        KAFKA_SSL_CAFILE=str(ca),
        KAFKA_SSL_CERTFILE=str(ca),
        KAFKA_SSL_KEYFILE=str(key),
        **extra,
    )


def _client_config(client: Any) -> dict[str, Any]:
    return {
        "security_protocol": client._security_protocol,
        "sasl_mechanism": client._sasl_mechanism,
        "sasl_plain_username": client._sasl_plain_username,
        "sasl_plain_password": client._sasl_plain_password,
        "ssl_context": client._ssl_context,
    }


def _assert_secured(config: dict[str, Any], what: str) -> None:
    assert config["security_protocol"] == "SASL_SSL", what
    assert config["sasl_mechanism"] == "SCRAM-SHA-512", what
    assert config["sasl_plain_username"] == "trader", what
    assert config["sasl_plain_password"] == PASSWORD, what
    context = config["ssl_context"]
    assert isinstance(context, ssl.SSLContext), what
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED, what
    issuers = [str(c["issuer"]) for c in context.get_ca_certs()]
    assert any("tradeloop-test-ca" in i for i in issuers), what


def test_every_client_the_bus_builds_carries_tls_and_sasl(tmp_path: Path) -> None:
    conn = KafkaConnection.from_settings(_sasl_ssl(tmp_path))
    assert PASSWORD not in repr(conn)

    async def build() -> list[tuple[str, dict[str, Any]]]:
        producer = AIOKafkaProducer(**conn.producer_options())
        grouped = AIOKafkaConsumer("t", **conn.consumer_options("g", from_beginning=True))
        alone = AIOKafkaConsumer(**conn.consumer_options(None, from_beginning=False))
        admin = AIOKafkaAdminClient(**conn.admin_options())
        return [
            ("producer", _client_config(producer.client)),
            ("group consumer", _client_config(grouped._client)),
            ("consumer", _client_config(alone._client)),
            ("admin", _client_config(admin._client)),
        ]

    for what, config in asyncio.run(build()):
        _assert_secured(config, what)


def test_the_faust_app_gets_the_same_credentials(tmp_path: Path) -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    conn = KafkaConnection.from_settings(_sasl_ssl(tmp_path))
    app = faust.App("bus-security-test", **conn.faust_options())
    auth = dict(credentials_to_aiokafka_auth(app.conf.broker_credentials))
    auth.setdefault("sasl_mechanism", None)
    _assert_secured(auth, "faust")
    # PLAINTEXT stays the default, with no credentials at all
    plain = faust.App("bus-plain-test", **KafkaConnection("h:9092").faust_options())
    assert credentials_to_aiokafka_auth(plain.conf.broker_credentials) == {
        "security_protocol": "PLAINTEXT"
    }


def test_tls_without_sasl_and_plaintext_defaults() -> None:
    assert "security_protocol" not in KafkaConnection("h:9092").producer_options()
    tls = KafkaConnection.from_settings(KafkaSettings(KAFKA_SECURITY_PROTOCOL="SSL"))
    opts = tls.admin_options()
    assert opts["security_protocol"] == "SSL" and isinstance(opts["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in opts


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "trader"},
            "KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SSL_CAFILE": "/etc/ca.pem"}, "does not use TLS"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": "/etc/c.pem"},
            "go together",
        ),
    ],
)
def test_incomplete_security_settings_fail_before_connecting(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        KafkaConnection.from_settings(KafkaSettings(**env))  # type: ignore[arg-type]


def _sasl_bus(make_settings: Callable[..., Settings], **env: Any) -> KafkaBus:
    return KafkaBus(
        make_settings(
            KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            KAFKA_SASL_USERNAME="trader",
            KAFKA_SASL_PASSWORD=PASSWORD,
            KAFKA_REQUEST_TIMEOUT_MS=3000,
            **env,
        )
    )


async def _start_each(bus: KafkaBus) -> list[BaseException]:
    errors: list[BaseException] = []
    for start in (
        lambda: bus.producer().start(),
        lambda: bus.consumer([bus.topic("bars")], None).start(),
        bus.admin,
    ):
        try:
            await start()  # type: ignore[no-untyped-call]
        except BaseException as exc:
            errors.append(exc)
    return errors


def _assert_refused(errors: list[BaseException], mechanism: str) -> None:
    assert len(errors) == 3
    for exc in errors:
        assert isinstance(exc, KafkaAuthError) and isinstance(exc, BrokerUnavailableError)
        text = str(exc)
        assert f"SASL_PLAINTEXT {mechanism} as user 'trader'" in text
        assert "KAFKA_SASL_USERNAME" in text and PASSWORD not in text


def test_sasl_against_the_tansu_broker_without_sasl_fails_clearly(
    make_settings: Callable[..., Settings],
) -> None:
    # the fixture's Tansu runs without --authentication: it refuses the SASL handshake
    _assert_refused(asyncio.run(_start_each(_sasl_bus(make_settings))), "SCRAM-SHA-512")


@pytest.fixture
def authenticating_tansu(tmp_path: Path) -> Iterator[str]:
    """Start a Tansu broker that requires SASL (and knows no users); yield its address."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    with open(tmp_path / "tansu-auth.log", "ab") as out:
        proc = subprocess.Popen([*argv, "--authentication"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, 10, proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_scram_refused_by_an_authenticating_broker_fails_clearly(
    make_settings: Callable[..., Settings], authenticating_tansu: str
) -> None:
    bus = _sasl_bus(
        make_settings,
        KAFKA_BOOTSTRAP_SERVERS=authenticating_tansu,
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
    )
    _assert_refused(asyncio.run(_start_each(bus)), "SCRAM-SHA-256")


def test_plaintext_bus_still_reaches_the_broker(make_settings: Callable[..., Settings]) -> None:
    async def roundtrip(bus: KafkaBus) -> list[str]:
        admin = await bus.admin()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    assert isinstance(asyncio.run(roundtrip(KafkaBus(make_settings()))), list)
