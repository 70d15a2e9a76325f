"""Where training's independent pieces run: in this process, or as tasks on a Ray cluster.

`tradeloop train --ray ADDRESS` and `tradeloop tune --ray ADDRESS` (or
`TRAIN_RAY_ADDRESS`) run the dataset shards (source lakes in the object store),
the fold fits, the sizer's training and the Optuna trials as Ray tasks. Without it, `LocalExecutor` runs the same functions in the
same order in this process, so a run gives the same models with or without Ray.
Ray is the optional `ray` extra and is imported only when a cluster is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

from pydantic import SecretStr

from infra.settings import Settings
from training.config import TrainingError

__all__ = [
    "TASK_SECRETS",
    "ClusterError",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "connect",
    "executor_for",
    "is_shared",
    "task_settings",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClusterError(TrainingError):
    """Raise when the Ray cluster cannot be reached, or a task's worker or node was lost."""


class Executor(Protocol):
    """Run independent calls somewhere and collect their results in submission order."""

    name: str

    def share(self, value: Any) -> Any:
        """Return a handle to pass to many calls (Ray: one copy in the object store)."""
        ...

    def submit(self, fn: Callable[..., T], *args: Any) -> Any:
        """Start `fn(*args)`; return a pending result for `gather`."""
        ...

    def gather(self, pending: Sequence[Any]) -> list[Any]:
        """Wait for pending results; return them in the order given."""
        ...

    def slots(self) -> int:
        """Return how many calls can run at once."""
        ...


class LocalExecutor:
    """Run each call in this process when it is gathered, in submission order."""

    name = "local"

    def share(self, value: Any) -> Any:
        """Return the value itself."""
        return value

    def submit(self, fn: Callable[..., T], *args: Any) -> Any:
        """Defer `fn(*args)` to `gather`."""
        return partial(fn, *args)

    def gather(self, pending: Sequence[Any]) -> list[Any]:
        """Run the deferred calls one after another."""
        return [call() for call in pending]

    def slots(self) -> int:
        """Return 1: one call at a time."""
        return 1


@dataclass
class RayExecutor:
    """Run each call as a Ray task (one CPU each) on the cluster at `address`."""

    address: str
    name: str = "ray"
    _remote: dict[Callable[..., Any], Any] = field(default_factory=dict, repr=False)

    def share(self, value: Any) -> Any:
        """Put the value in the object store once; tasks receive it resolved."""
        import ray

        return ray.put(value)

    def submit(self, fn: Callable[..., T], *args: Any) -> Any:
        """Submit `fn(*args)` as a task."""
        import ray

        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = ray.remote(num_cpus=1, max_retries=1)(fn)
        return remote.remote(*args)

    def gather(self, pending: Sequence[Any]) -> list[Any]:
        """Wait for the tasks; re-raise a task's own exception, a lost worker as ClusterError."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            return list(ray.get(list(pending)))
        except RayTaskError as exc:
            if exc.cause is not None:
                raise exc.cause from None
            raise ClusterError(f"ray task failed: {exc}") from None
        except RayError as exc:
            raise ClusterError(f"ray cluster at {self.address}: {exc}") from None

    def slots(self) -> int:
        """Return the cluster's CPUs (at least 1)."""
        import ray

        return max(1, int(ray.cluster_resources().get("CPU", 1)))


#: The only secrets a task receives: reading the lake from S3 needs them.
TASK_SECRETS: frozenset[str] = frozenset({"aws_access_key_id", "aws_secret_access_key"})


def task_settings(settings: Settings) -> Settings:
    """Return settings to ship to tasks: every secret but the store's credentials blanked."""
    blank = {
        name: SecretStr("")
        for name, info in type(settings).model_fields.items()
        if info.annotation is SecretStr and name not in TASK_SECRETS
    }
    return settings.model_copy(update=blank)


def is_shared(uri: str) -> bool:
    """Return True for a lake every node reads (the object store), not one on this disk."""
    return uri.startswith("s3://")


def connect(address: str) -> RayExecutor:
    """Join the Ray cluster at `address` (`auto`: the one started on this node).

    Raise `ClusterError` naming the address when Ray is not installed or the
    cluster cannot be reached.
    """
    address = address.strip()
    if not address:
        raise ClusterError("empty Ray address: give `auto` or HOST:PORT")
    try:
        import ray
    except ImportError:
        raise ClusterError(
            "training on Ray needs the ray extra: pip install -c constraints.txt 'tradeloop[ray]'"
        ) from None
    _probe(address)
    if ray.is_initialized():
        joined = ray.get_runtime_context().gcs_address
        if address != "auto" and address.removeprefix("ray://") != joined:
            raise ClusterError(f"this process already joined the Ray cluster at {joined!r}")
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
    cpus = ray.cluster_resources().get("CPU", 0)
    log.info("training on the Ray cluster at %s (%d CPUs)", address, int(cpus))
    return RayExecutor(address)


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when HOST:PORT does not accept a connection (Ray itself waits minutes)."""
    import socket

    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"Ray address {address!r}: expected `auto` or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def executor_for(address: str | None) -> Executor:
    """Return a Ray executor for an address, else the local one."""
    return connect(address) if address else LocalExecutor()
