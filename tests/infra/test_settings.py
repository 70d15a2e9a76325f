"""Settings per context: each reads its own variables, composed once, secrets never shown."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from infra.cli import config
from infra.settings import (
    CONTEXTS,
    KafkaSettings,
    Settings,
    SettingsContext,
    StoreSettings,
    VenueSettings,
    settings_env,
    settings_markdown,
)

FIELDS = [(ctx, name, fld) for ctx in CONTEXTS for name, fld in ctx.model_fields.items()]
SECRETS = [(ctx, name, fld) for ctx, name, fld in FIELDS if fld.annotation is SecretStr]


def _alias(fld: FieldInfo) -> str:
    assert isinstance(fld.validation_alias, str)
    return fld.validation_alias


def _sample(fld: FieldInfo) -> tuple[str, object]:
    """Return an environment value unlike the default and the value it parses to."""
    kind = fld.annotation
    if kind is SecretStr:
        return "s3cr3t-" + _alias(fld).lower(), SecretStr("s3cr3t-" + _alias(fld).lower())
    if kind is bool:
        return ("0", False) if fld.default else ("1", True)
    if kind is int:
        low = max([7, *(getattr(m, "ge", None) or 0 for m in fld.metadata)])
        value = low + 1 if low == fld.default else low
        return str(value), value
    if kind is float:
        return "0.5", 0.5
    if typing.get_origin(kind) is typing.Literal:
        choice = next(c for c in typing.get_args(kind) if c != fld.default)
        return str(choice), choice
    if typing.get_origin(kind) is tuple:
        return "aa, bb", ("AA", "BB")
    assert kind is str, f"no sample for {kind}"
    return "value-of-" + _alias(fld).lower(), "value-of-" + _alias(fld).lower()


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no `.env` of the checkout is read


@pytest.mark.parametrize(
    ("context", "name", "fld"), FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _ in FIELDS]
)
def test_each_context_reads_its_own_variables(
    context: type[SettingsContext], name: str, fld: FieldInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, parsed = _sample(fld)
    assert parsed != fld.default
    monkeypatch.setenv(_alias(fld), raw)
    alone = context()
    composed = Settings()
    for got in (getattr(alone, name), getattr(composed, name)):
        if isinstance(parsed, SecretStr):
            assert isinstance(got, SecretStr)
            assert got.get_secret_value() == parsed.get_secret_value()
        else:
            assert got == parsed


def test_a_context_holds_only_its_own_fields() -> None:
    kafka = KafkaSettings(S3_BUCKET="b", KAFKA_BOOTSTRAP_SERVERS="h:1", VENUE="x")
    assert kafka.bootstrap_servers == "h:1" and kafka.topic("bars") == "tradeloop.bars"
    assert not hasattr(kafka, "s3_bucket") and not hasattr(kafka, "venue")
    assert VenueSettings().venue == "paper" and Settings().venue == "paper"
    store = StoreSettings(S3_BUCKET="b")
    assert store.lake == "s3://b/lake" and store.uses_s3 and not hasattr(store, "topic_prefix")


def test_the_composed_settings_hold_every_field_exactly_once() -> None:
    seen: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for ctx, name, fld in FIELDS:
        assert name not in seen, f"{name} in {seen.get(name)} and {ctx.__name__}"
        assert _alias(fld) not in aliases, f"{_alias(fld)} twice"
        seen[name] = ctx.__name__
        aliases[_alias(fld)] = name
    assert set(Settings.model_fields) == set(seen), "a field outside every context"
    assert len(Settings.model_fields) == len(FIELDS)
    assert set(CONTEXTS) == set(Settings.__mro__[1 : 1 + len(CONTEXTS)])
    assert len({ctx.title for ctx in CONTEXTS}) == len(CONTEXTS)


def test_every_field_is_described() -> None:
    bare = [name for _, name, fld in FIELDS if not (fld.description or "").strip()]
    assert bare == []


def test_settings_env_reproduces_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {_alias(fld): _sample(fld)[0] for _, _, fld in FIELDS}
    original = Settings(**values)
    for alias in values:
        monkeypatch.delenv(alias, raising=False)
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    assert Settings() == original


def _secret_env(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    secrets = []
    for _, _, fld in SECRETS:
        raw = _sample(fld)[0]
        monkeypatch.setenv(_alias(fld), raw)
        secrets.append(raw)
    assert len(secrets) >= 5  # the AWS pair and the three manifest keys
    return secrets


def test_masked_output_never_contains_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = _secret_env(monkeypatch)
    settings = Settings()
    shown = [
        json.dumps(settings.masked(), default=str),
        json.dumps(settings.masked_by_context(), default=str),
        repr(settings),
        str(settings),
    ]
    runner = CliRunner()
    for args in ([], ["--json"], ["--markdown"]):
        result = runner.invoke(config, args)
        assert result.exit_code == 0, result.output
        shown.append(result.output)
    leaked = [s for s in secrets for text in shown if s in text]
    assert leaked == []
    masked = settings.masked()
    assert all(masked[name] == "********" for _, name, _ in SECRETS)


def test_config_prints_every_field_grouped_by_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker.example:9092")
    monkeypatch.setenv("S3_BUCKET", "tl-bucket")
    import infra.settings as module

    module.get_settings.cache_clear()
    try:
        out = CliRunner().invoke(config, []).output
        flat = json.loads(CliRunner().invoke(config, ["--json"]).output)
    finally:
        module.get_settings.cache_clear()
    lines = out.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("[")]
    assert [lines[i] for i in headers] == [f"[{ctx.title}]" for ctx in CONTEXTS]
    for ctx, start, end in zip(CONTEXTS, headers, [*headers[1:], len(lines)], strict=True):
        names = [line.split()[0] for line in lines[start + 1 : end]]
        assert names[: len(ctx.model_fields)] == list(ctx.model_fields)
    assert "  bootstrap_servers (effective)  broker.example:9092" in out
    assert flat["bootstrap_servers (effective)"] == "broker.example:9092"
    assert flat["store (effective)"] == "s3://tl-bucket"
    assert set(Settings.model_fields) <= set(flat)


def test_markdown_has_one_table_per_context_and_every_variable_once() -> None:
    page = settings_markdown()
    assert CliRunner().invoke(config, ["--markdown"]).output == page
    sections = page.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == [ctx.title for ctx in CONTEXTS]
    for ctx, section in zip(CONTEXTS, sections, strict=True):
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == [_alias(f) for f in ctx.model_fields.values()]
    for _, _, fld in FIELDS:
        assert page.count(f"| `{_alias(fld)}` |") == 1
    assert "| `SYMBOLS` | `ES,NQ` |" in page
    assert "| `MANIFEST_HMAC_KEY` | `(secret, unset)` |" in page


def test_credentials_inside_urls_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    hidden = ["redis-pw-1", "AKIA-user-2", "s3-pw-3", "sasl-pw-4", "sig-5"]
    monkeypatch.setenv("REDIS_URL", "redis://worker:redis-pw-1@redis.internal:6379/0")
    monkeypatch.setenv("S3_ENDPOINT_URL", "https://AKIA-user-2:s3-pw-3@s3.internal:9000")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "trader")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "sasl-pw-4")
    monkeypatch.setenv("CDN_BASE_URL", "https://cdn.example/models?X-Amz-Signature=sig-5")
    import infra.settings as module

    module.get_settings.cache_clear()
    try:
        settings = Settings()
        shown = [
            json.dumps(settings.masked_by_context(), default=str),
            repr(settings),
            str(settings),
            CliRunner().invoke(config, []).output,
            CliRunner().invoke(config, ["--json"]).output,
        ]
    finally:
        module.get_settings.cache_clear()
    assert [h for h in hidden for text in shown if h in text] == []
    masked = settings.masked()
    assert masked["redis_url"] == "redis://********@redis.internal:6379/0"
    assert masked["s3_endpoint_url"] == "https://********@s3.internal:9000"
    assert masked["kafka_sasl_password"] == "********"
    assert masked["kafka_sasl_username"] == "trader"  # a user name is not a secret
    assert masked["cdn_base_url"].endswith("X-Amz-Signature=********")
    # the settings keep the real values for the clients
    assert settings.redis_url == "redis://worker:redis-pw-1@redis.internal:6379/0"
