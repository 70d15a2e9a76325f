"""`tradeloop venues`: serve a venue simulator locally (`venues sim NAME --port PORT`)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

import click

from trader.venues.sims import SIMULATORS

__all__ = ["venues"]

Runner = Callable[..., Coroutine[Any, Any, None]]


def load_simulator(name: str) -> Runner:
    """Return the runner of the simulator registered under `name`."""
    target = SIMULATORS.get(name)
    if target is None:
        raise click.BadParameter(
            f"unknown simulator {name!r}; known: {', '.join(sorted(SIMULATORS))}", param_hint="NAME"
        )
    module_name, _, attr = target.partition(":")
    runner: Runner = getattr(importlib.import_module(module_name), attr)
    return runner


@click.group()
def venues() -> None:
    """Venue simulators for dry runs before a real account."""


@venues.command("sim")
@click.argument("name")
@click.option("--port", type=int, default=0, show_default=True, help="Port (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface (loopback).")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the market's bars.")
@click.option("--days", type=int, default=1, show_default=True, help="Days of bars to play.")
@click.option(
    "--bar-ms", type=int, default=1000, show_default=True, help="Milliseconds between bars."
)
@click.option(
    "--session",
    type=click.Choice(["rth", "globex"]),
    default="rth",
    show_default=True,
    help="Bars of regular hours only, or the whole Globex day.",
)
@click.option(
    "--no-wait", is_flag=True, help="Start the market at once, not when a trader subscribes."
)
def sim(
    name: str, port: int, host: str, seed: int, days: int, bar_ms: int, session: str, no_wait: bool
) -> None:
    """Serve the simulator of venue NAME and print the settings that reach it."""
    from infra.settings import get_settings

    runner = load_simulator(name)
    settings = get_settings()

    def echo(values: dict[str, str]) -> None:
        for key, value in values.items():
            click.echo(f"{key}={value}")
        click.echo(f"# {name} simulator listening; Ctrl-C stops it", err=True)

    options: dict[str, Any] = {
        "seed": seed,
        "days": days,
        "bar_ms": bar_ms,
        "wait_for_client": not no_wait,
        "session": session,
    }
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(settings, host, port, echo, **options))
