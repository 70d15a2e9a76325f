"""`tradeloop streams worker` and `tradeloop replay`."""

from __future__ import annotations

import click

from infra.settings import get_settings

__all__ = ["streams"]


@click.group()
def streams() -> None:
    """The Faust streams worker."""


@streams.command()
@click.option(
    "--group",
    "group_id",
    default="",
    help="Consumer group / Faust app id (default: {prefix}streams).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=9108,
    envvar="STREAMS_METRICS_PORT",
    show_default=True,
    help="Serve Prometheus /metrics on this port (0: off).",
)
@click.option(
    "--lake-batch-events",
    type=int,
    default=5000,
    envvar="LAKE_BATCH_EVENTS",
    show_default=True,
    help="Flush the lake sink after this many buffered events.",
)
@click.option(
    "--lake-batch-seconds",
    type=float,
    default=5.0,
    envvar="LAKE_BATCH_SECONDS",
    show_default=True,
    help="Flush the lake sink when the oldest buffered event is this old.",
)
@click.option(
    "--push-interval",
    type=float,
    default=0.5,
    envvar="FEAST_PUSH_INTERVAL_SEC",
    show_default=True,
    help="Seconds between batched Feast online pushes.",
)
@click.option(
    "--commit-interval",
    type=float,
    default=1.0,
    envvar="STREAMS_COMMIT_INTERVAL_SEC",
    show_default=True,
    help="Seconds between Faust offset commits.",
)
@click.option("--no-feast", is_flag=True, help="Do not push to the Feast online store.")
@click.option("--no-sink", is_flag=True, help="Do not run the lake sink.")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(
    group_id: str,
    metrics_port: int,
    lake_batch_events: int,
    lake_batch_seconds: float,
    push_interval: float,
    commit_interval: float,
    no_feast: bool,
    no_sink: bool,
    loglevel: str,
) -> None:
    """Run the streams worker: validate, stream features, Feast online, event lake."""
    from streams.app import WorkerOptions, create_app

    options = WorkerOptions(
        group_id=group_id,
        metrics_port=metrics_port,
        lake_batch_events=lake_batch_events,
        lake_batch_seconds=lake_batch_seconds,
        push_interval_s=push_interval,
        commit_interval_s=commit_interval,
        feast=not no_feast,
        sink=not no_sink,
    )
    create_app(get_settings(), options).run(loglevel=loglevel)
