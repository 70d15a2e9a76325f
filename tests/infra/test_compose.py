"""docker-compose.yml: structure, health checks, restarts, real verbs, secrets, topics.

There is no Docker engine on the build machines, so the file is checked as data:
every `tradeloop` command a service runs is resolved through `infra.cli.VERBS`
down to its click command (where the module is built) and every option it passes
must exist there.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from infra.cli import VERBS, cli
from infra.contracts import TOPICS
from infra.settings import Settings
from tests import ROOT

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|HMAC|TOKEN|PRIVATE_KEY|ACCESS_KEY)", re.I)
REQUIRED_REF = re.compile(r"^\$\{([A-Z0-9_]+):\?[^}]*\}$")
LONG_RUNNING = {
    "kafka",
    "minio",
    "redis",
    "streams",
    "trader",
    "trainer",
    "feast",
    "prometheus",
    "grafana",
}
ONE_SHOT = {"kafka-init", "minio-init", "iam-render"}
#: Environment variables of tradeloop containers that are not `Settings` fields.
NON_SETTINGS_ENV = {"TRADELOOP_HOME", "LOG_LEVEL", "STREAMS_METRICS_PORT"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def _scripts(svc: dict[str, Any]) -> list[str]:
    """Return the shell scripts (or the joined argv) a service runs, as its shell sees them."""
    argv: list[str] = []
    for key in ("entrypoint", "command"):
        value = svc.get(key)
        argv.extend([value] if isinstance(value, str) else [str(v) for v in value or []])
    argv = [a.replace("$$", "$") for a in argv]  # compose's escape for a literal $
    if argv and argv[0] in ("sh", "/bin/sh", "bash", "/bin/bash"):
        return [a for a in argv[1:] if not a.startswith("-")]
    return [shlex.join(argv)] if argv else []


def _tradeloop_calls(svc: dict[str, Any]) -> list[list[str]]:
    """Return every `tradeloop ...` argv in a service's command, shell or exec form."""
    calls = []
    for script in _scripts(svc):
        for line in re.split(r"&&|\|\||;|\n|\|", script):
            try:
                tokens = shlex.split(line)
            except ValueError:
                continue
            for i, tok in enumerate(tokens):
                if tok == "tradeloop":
                    calls.append(tokens[i + 1 :])
    return calls


def test_compose_is_valid_yaml_with_every_service(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert set(services) == LONG_RUNNING | ONE_SHOT
    declared_volumes = set(compose.get("volumes") or {})
    for name, svc in services.items():
        assert "image" in svc, name
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_every_service_has_a_healthcheck_or_a_reason_and_a_restart_policy(
    compose: dict[str, Any],
) -> None:
    for name, svc in _services(compose).items():
        hc = svc.get("healthcheck") or {}
        if hc.get("disable"):
            reason = svc.get("x-healthcheck-reason", "")
            assert len(reason) > 20, f"{name}: healthcheck disabled without a reason"
        else:
            assert hc.get("test"), f"{name}: no healthcheck"
            assert hc.get("interval") and hc.get("retries"), name
        restart = svc.get("restart")
        if name in LONG_RUNNING:
            assert restart in ("unless-stopped", "always"), f"{name}: restart={restart}"
        else:
            assert restart in ("on-failure", "no"), f"{name}: restart={restart}"
    # one-shot jobs gate the services that need them
    services = _services(compose)
    for name in ("streams", "trader", "trainer"):
        deps = services[name]["depends_on"]
        assert deps["kafka-init"]["condition"] == "service_completed_successfully"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def _resolve(argv: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """Return the click command an argv reaches, its path, and the remaining arguments."""
    ctx = click.Context(cli)
    command: click.Command = cli
    path: list[str] = []
    rest = list(argv)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"`tradeloop {' '.join(path + rest[:1])}` is not a command"
        path.append(rest.pop(0))
        command = sub
    return command, path, rest


def test_every_tradeloop_command_is_a_real_verb_with_real_options(compose: dict[str, Any]) -> None:
    calls = {name: _tradeloop_calls(svc) for name, svc in _services(compose).items()}
    used = {name: c for name, c in calls.items() if c}
    assert set(used) == {"streams", "trader", "trainer", "feast"}
    runner = CliRunner()
    checked_deep = 0
    for service, argvs in used.items():
        for argv in argvs:
            verb = argv[0]
            assert verb in VERBS, f"{service}: `tradeloop {verb}` is not a verb of infra.cli.VERBS"
            module = VERBS[verb][0].split(":")[0]
            if importlib.util.find_spec(module) is None:
                continue  # not built yet: the verb is reserved in VERBS, nothing more to check
            command, path, rest = _resolve(argv)
            result = runner.invoke(cli, [*path, "--help"])
            assert result.exit_code == 0, f"tradeloop {' '.join(path)} --help: {result.output}"
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
            for tok in rest:
                if tok.startswith("-"):
                    assert tok.split("=")[0] in known, f"{service}: {' '.join(path)} has no {tok}"
            checked_deep += 1
    assert checked_deep >= 2  # trade and streams worker exist today


def test_the_feast_server_command_is_real(compose: dict[str, Any]) -> None:
    script = " ".join(_scripts(_services(compose)["feast"]))
    argv = shlex.split(script.split("exec ", 1)[1])
    assert argv[:3] == ["feast", "-c", "$FEAST_REPO_DIR"] and argv[3] == "serve"
    # the `feast` executable is Feast's click group; its options are read from it here
    # (the suite imports Feast anyway: no second interpreter loading it for a --help)
    feast = Path(sys.executable).parent / "feast"
    assert "from feast.cli.cli import cli" in feast.read_text()
    from feast.cli.cli import cli as feast_cli

    assert isinstance(feast_cli, click.Group) and "-c" in _opts(feast_cli)
    serve = feast_cli.commands["serve"]
    for opt in argv[4:]:
        if opt.startswith("-"):
            assert opt in _opts(serve), opt


def _opts(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_no_secret_is_inlined(compose: dict[str, Any]) -> None:
    example = {
        k: v
        for k, _, v in (line.partition("=") for line in ENV_EXAMPLE.read_text().splitlines())
        if k and not k.startswith("#") and v
    }
    required: set[str] = set()
    for name, svc in _services(compose).items():
        assert "env_file" not in svc, f"{name}: env_file would hand every secret to every service"
        for key, value in _env(svc).items():
            refs = re.findall(r"\$\{([A-Z0-9_]+)(:?[-?])?[^}]*\}", value)
            for ref, kind in refs:
                if SECRET_NAME.search(ref):
                    assert kind == ":?", f"{name}.{key}: secret {ref} must be required, no default"
                    required.add(ref)
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.match(value), f"{name}.{key} is not a ${{VAR:?}} reference"
    text = COMPOSE.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert "redis://:${REDIS_PASSWORD:?" in text
    # every required secret has a placeholder in .env.example, and nothing real is there
    assert required >= {"MANIFEST_ED25519_PRIVATE_KEY", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD",
                        "TRADER_AWS_SECRET_ACCESS_KEY", "GRAFANA_ADMIN_PASSWORD"}  # fmt: skip
    for ref in required:
        assert example.get(ref, "").startswith("change-me"), f".env.example lacks {ref}"
    # .env is ignored and not tracked
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout.strip() == ""


def test_each_service_gets_only_its_own_credentials(compose: dict[str, Any]) -> None:
    services = _services(compose)
    owner = {"trader": "TRADER", "streams": "STREAMS", "trainer": "TRAINER", "feast": "FEAST"}
    for name, prefix in owner.items():
        env = _env(services[name])
        assert env["AWS_ACCESS_KEY_ID"].startswith(f"${{{prefix}_AWS_ACCESS_KEY_ID:?")
        assert env["AWS_SECRET_ACCESS_KEY"].startswith(f"${{{prefix}_AWS_SECRET_ACCESS_KEY:?")
        others = [p for p in owner.values() if p != prefix]
        assert not any(o in v for v in env.values() for o in others), name
    # the trainer alone can sign; traders verify with public keys and hold no signing key
    assert "MANIFEST_ED25519_PRIVATE_KEY" in _env(services["trainer"])
    assert "MANIFEST_ED25519_PUBLIC_KEYS" in _env(services["trader"])
    for name in ("trader", "streams", "feast"):
        env = _env(services[name])
        assert not {"MANIFEST_HMAC_KEY", "MANIFEST_ED25519_PRIVATE_KEY"} & set(env), name
    assert "MINIO_ROOT_PASSWORD" not in _env(services["trader"])


def test_tradeloop_services_use_the_cli_settings_names(compose: dict[str, Any]) -> None:
    aliases = {f.validation_alias for f in Settings.model_fields.values()}
    for name in ("streams", "trader", "trainer", "feast"):
        env = _env(_services(compose)[name])
        unknown = set(env) - aliases - NON_SETTINGS_ENV
        assert not unknown, f"{name}: not settings of infra/settings.py: {unknown}"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["LAKE_URI"].startswith("s3://") and env["REDIS_URL"].startswith("redis://")
    trader = _env(_services(compose)["trader"])
    assert trader["HTTP_HOST"] == "0.0.0.0" and trader["HTTP_PORT"] == "8080"
    assert trader["OUTBOX_DIR"].startswith("/var/lib/tradeloop")


def test_kafka_is_kraft_and_topics_follow_design(compose: dict[str, Any]) -> None:
    services = _services(compose)
    env = _env(services["kafka"])
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not any("zookeeper" in str(s.get("image", "")) for s in services.values())
    script = _scripts(services["kafka-init"])[-1]
    loop = re.search(r"for topic in ([a-z ]+); do", script)
    assert loop is not None
    deleted = set(loop.group(1).split())
    compacted = set(
        re.findall(r'--topic "\$\{TOPIC_PREFIX\}(\w+)"[^\n]*cleanup\.policy=compact', script)
    )
    assert deleted == {n for n, s in TOPICS.items() if not s.compacted}
    assert compacted == {n for n, s in TOPICS.items() if s.compacted} == {"models"}
    assert "--if-not-exists" in script and "retention.ms=" in script
    models_line = next(line for line in script.splitlines() if "compact" in line)
    assert "--partitions 1" in models_line
    assert _env(services["kafka-init"])["TOPIC_PREFIX"] == "${TOPIC_PREFIX:-tradeloop.}"


def test_minio_bucket_is_versioned_and_users_get_the_iam_policies(compose: dict[str, Any]) -> None:
    script = _scripts(_services(compose)["minio-init"])[-1]
    assert 'mc mb --ignore-existing "local/${S3_BUCKET}"' in script
    assert 'mc version enable "local/${S3_BUCKET}"' in script
    policies = set(re.findall(r"user \S+ (\S+-policy\.json)", script))
    on_disk = {p.name for p in (ROOT / "infra/deploy/iam").glob("*-policy.json")} - {
        "bucket-policy.json"
    }
    assert policies == on_disk
    render = _services(compose)["iam-render"]["command"]
    assert render[:2] == ["python", "/app/infra/deploy/iam/render.py"]
    dockerfile = (ROOT / "infra/deploy/Dockerfile").read_text()
    assert "COPY infra/deploy/iam /app/infra/deploy/iam" in dockerfile


def test_observability_is_wired(compose: dict[str, Any]) -> None:
    services = _services(compose)
    prom = yaml.safe_load((ROOT / "infra/deploy/prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets["trader"] == [f"trader:{_env(services['trader'])['HTTP_PORT']}"]
    streams_cmd = services["streams"]["command"]
    port = streams_cmd[streams_cmd.index("--metrics-port") + 1]
    assert targets["streams"] == [f"streams:{port}"]
    assert _env(services["streams"])["STREAMS_METRICS_PORT"] == port
    assert "tradeloop.json" in " ".join(services["grafana"]["volumes"])


def _acls(script: str) -> set[tuple[str, str, str, str, bool]]:
    """Return the (user, operation, resource type, name, prefixed) grants of kafka-init.

    `allow` calls inside `for topic in ...; do` loops are expanded.
    """
    grants: set[tuple[str, str, str, str, bool]] = set()
    loop: list[str] = []
    for raw in script.splitlines():
        line = raw.strip()
        if m := re.match(r"for topic in ([a-z ]+); do", line):
            loop = m.group(1).split()
            continue
        if line == "done":
            loop = []
            continue
        if not line.startswith("allow "):
            continue
        user, op, kind, name, *rest = shlex.split(line)[1:]
        for topic in loop or [""]:
            resolved = name.replace("${TOPIC_PREFIX}", "P.").replace("${topic}", topic)
            grants.add((user, op, kind, resolved, rest == ["prefixed"]))
    return grants


def test_kafka_uses_sasl_scram_with_a_user_and_acls_per_service(compose: dict[str, Any]) -> None:
    services = _services(compose)
    kafka = _env(services["kafka"])
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {lst.split("://")[0]: lst for lst in kafka["KAFKA_LISTENERS"].split(",")}
    # clients (in the network and from the host) authenticate; plaintext only on loopback
    assert protocols["SASL"] == protocols["HOST"] == "SASL_PLAINTEXT"
    assert protocols["LOCAL"] == "PLAINTEXT" and listeners["LOCAL"].startswith("LOCAL://127.0.0.1:")
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    published = " ".join(str(p) for p in services["kafka"]["ports"])
    assert "19092" not in published
    assert services["kafka-init"]["network_mode"] == "service:kafka"

    # each tradeloop service connects as its own user with its own password
    for name in ("streams", "trader", "trainer"):
        env = _env(services[name])
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"] == name
        assert env["KAFKA_SASL_PASSWORD"].startswith(f"${{{name.upper()}_KAFKA_PASSWORD:?")
    assert "KAFKA_SASL_PASSWORD" not in _env(services["feast"])

    script = _scripts(services["kafka-init"])[-1]
    users = set(re.findall(r"^\s*user (\w+) \"\$\{(\w+)_KAFKA_PASSWORD\}\"", script, re.M))
    assert users == {("trader", "TRADER"), ("trainer", "TRAINER"), ("streams", "STREAMS"),
                     ("monitor", "MONITOR")}  # fmt: skip
    assert "SCRAM-SHA-512=[iterations=8192,password=$2]" in script
    grants = _acls(script)

    def can(user: str, op: str, topic: str) -> bool:
        for u, o, kind, name, prefixed in grants:
            full = f"P.{topic}"
            matches = name == full or (prefixed and full.startswith(name))
            if (u, kind) == (user, "topic") and o in (op, "All") and matches:
                return True
        return False

    sources = ("bars", "signals", "orders", "outcomes")
    # trader: reads models, writes its own topics and nothing else
    assert can("trader", "Read", "models") and not can("trader", "Write", "models")
    assert all(can("trader", "Write", t) for t in sources)
    assert not any(can("trader", "Write", t) for t in ("features", "drift", "dlq"))
    # trainer: the only writer of models
    assert can("trainer", "Write", "models")
    assert [u for u in ("trader", "streams", "monitor") if can(u, "Write", "models")] == []
    # worker: reads the sources, writes its outputs and changelogs, never models or sources
    assert all(can("streams", "Read", t) for t in ("bars", "signals", "outcomes"))
    assert all(can("streams", "Write", t) for t in ("features", "drift", "dlq"))
    assert can("streams", "Write", "streams-stream_state-changelog")
    assert not any(can("streams", "Write", t) for t in (*sources, "models"))
    # monitor: reads everything, writes nothing
    assert all(can("monitor", "Read", t) for t in TOPICS)
    assert not any(can("monitor", "Write", t) for t in TOPICS)
    # consumer groups are granted by prefix per service
    groups = {(u, n) for u, o, kind, n, _ in grants if kind == "group"}
    assert {("trader", "P.trader"), ("streams", "P.streams")} <= groups
