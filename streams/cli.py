"""`tradeloop streams worker` and `tradeloop replay`."""

from __future__ import annotations

from collections.abc import Iterable

import click

from infra.bus import UnconfirmedSendError
from infra.heap import SERVICE_GEN0_OBJECTS
from infra.settings import get_settings

__all__ = ["replay", "streams"]


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
@click.option(
    "--gc-young-objects",
    type=int,
    default=SERVICE_GEN0_OBJECTS,
    envvar="STREAMS_GC_YOUNG_OBJECTS",
    show_default=True,
    help="After start-up, freeze the heap and collect young objects every this many "
    "(0: leave the collector as Python sets it).",
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
    gc_young_objects: int,
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
        gc_young_objects=gc_young_objects,
        feast=not no_feast,
        sink=not no_sink,
    )
    create_app(get_settings(), options).run(loglevel=loglevel)


@click.command()
@click.option(
    "--from", "start", default=None, help="Start time (UTC ISO, inclusive); default: the beginning."
)
@click.option("--to", "end", default=None, help="End time (UTC ISO, exclusive); default: the end.")
@click.option(
    "--topics", default="bars,signals,outcomes", show_default=True, help="Comma-separated topics."
)
@click.option(
    "--into",
    "into",
    type=click.Choice(["features", "kafka"]),
    default="features",
    show_default=True,
    help="features: rebuild stream features and the Feast online store; kafka: re-produce events.",
)
@click.option(
    "--source",
    type=click.Choice(["lake", "kafka"]),
    default="lake",
    show_default=True,
    help="Read the event lake, or the topics' records in the time range.",
)
@click.option(
    "--target-prefix", default=None, help="With --into kafka: produce onto this topic prefix."
)
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar.")
def replay(
    start: str | None,
    end: str | None,
    topics: str,
    into: str,
    source: str,
    target_prefix: str | None,
    no_progress: bool,
) -> None:
    """Replay the event lake (or a Kafka time range) through the worker's functions."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from infra.lake import skipped_files
    from streams import replay as rp

    settings = get_settings()
    t0, t1 = rp.parse_time(start), rp.parse_time(end)
    names = [t.strip() for t in topics.split(",") if t.strip()]
    if into == "features":
        bad = sorted(set(names) - set(rp.SOURCE_TOPICS))
        if bad:
            raise click.BadParameter(
                f"--into features folds {list(rp.SOURCE_TOPICS)}, not {bad}", param_hint="--topics"
            )
    if source == "lake":
        total = rp.lake_count(settings, names, t0, t1)
        records: Iterable[rp.Record] = rp.lake_records(settings, names, t0, t1)
    else:
        records = rp.kafka_records(settings, names, t0, t1)
        total = len(records)
    columns = (
        TextColumn("[bold]replay[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=no_progress) as bar:
        task = bar.add_task(f"{source} -> {into}", total=total)

        def advance(n: int) -> None:
            bar.advance(task, n)

        if into == "features":
            result = rp.replay_into_features(settings, records, progress=advance)
        else:
            try:
                result = rp.replay_into_kafka(
                    settings, records, target_prefix=target_prefix, progress=advance
                )
            except UnconfirmedSendError as exc:  # a broker killed mid-replay: run it again
                raise click.ClickException(
                    f"{exc}; run the replay again (consumers deduplicate by event id)"
                ) from None
    click.echo(
        f"replayed {result.events} events from {source} into {into}: "
        f"{result.outputs} feature outputs, {result.rows_pushed} online rows, "
        f"{result.produced} produced, {result.dead_letters} dead letters"
    )
    skipped = skipped_files()
    if skipped:
        click.echo(f"skipped {len(skipped)} unreadable lake files:")
        for unreadable in skipped:
            click.echo(f"  {unreadable.uri}: {unreadable.reason}")
