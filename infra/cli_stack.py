"""`tradeloop stack up|down|status`."""

from __future__ import annotations

import json
import time

import click

from infra.stack import StackError, stack_down, stack_status, stack_up


@click.group()
def stack() -> None:
    """Start, inspect or stop the embedded broker (Tansu) and S3 (moto)."""


@stack.command()
@click.option("--s3", is_flag=True, help="Also start moto's S3 server with a versioned bucket.")
@click.option(
    "--bucket", default="tradeloop", show_default=True, help="Bucket to create with --s3."
)
@click.option("--kafka-port", type=int, default=None, help="Broker port (default: a free one).")
@click.option(
    "--durable",
    is_flag=True,
    help="Keep the broker's records in S3 (starts moto): a broker restart keeps them.",
)
def up(s3: bool, bucket: str, kafka_port: int | None, durable: bool) -> None:
    """Start the embedded stack (reuses what already runs)."""
    t0 = time.monotonic()
    try:
        state = stack_up(s3=s3, bucket=bucket, kafka_port=kafka_port, durable=durable)
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    storage = state["kafka"].get("storage")
    click.echo(
        f"kafka  {state['kafka']['bootstrap']}" + (f"  storage={storage}" if storage else "")
    )
    if "s3" in state:
        click.echo(f"s3     {state['s3']['endpoint']}  bucket={state['s3']['bucket']}")
    click.echo(
        f"ready in {time.monotonic() - t0:.2f}s; other commands find it via .tradeloop/stack.json"
    )


@stack.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(as_json: bool) -> None:
    """Show what the stack started and whether it runs."""
    info = stack_status()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    if not info:
        click.echo("stack: not started (run `tradeloop stack up`)")
        return
    for name, entry in info.items():
        state = "running" if entry["running"] else "stopped"
        click.echo(f"{name:<6} {entry['address']:<28} pid={entry['pid']:<8} {state}")


@stack.command()
def down() -> None:
    """Stop the processes the stack started, and only those."""
    stopped = stack_down()
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
