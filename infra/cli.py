"""The `tradeloop` console script: one root, verbs loaded lazily from their packages."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from infra.logging import setup_logging

# verb -> "module:attribute"; each package owns its verbs, infra imports none of them.
VERBS: dict[str, tuple[str, str]] = {
    "stack": ("infra.cli_stack:stack", "Start, inspect or stop the embedded broker and S3."),
    "config": ("infra.cli:config", "Print the effective settings, secrets masked."),
    "events": ("streams.contracts_cli:events", "Event contracts: write JSON Schemas."),
    "demo": ("infra.demo:demo", "Run the whole loop end to end on the embedded stack."),
    "trade": ("trader.cli:trade", "Run the live (paper) trader on a feed."),
    "flatten": ("trader.cli:flatten", "Kill switch: cancel orders, flatten, halt entries."),
    "resume": ("trader.cli:resume", "Lift the kill switch of a running trader."),
    "backtest": ("trader.cli:backtest", "Backtest bars through the trader's code path."),
    "venues": ("trader.venues.sims.cli:venues", "Venue simulators: venues sim NAME --port PORT."),
    "report": ("trader.report:report", "Write an HTML report with plots."),
    "streams": ("streams.cli:streams", "Run the Faust streams worker."),
    "replay": ("streams.cli:replay", "Replay the event lake or a Kafka range."),
    "lake": ("infra.lake_check:lake", "Check the event lake: unreadable files, offset gaps."),
    "monitor": ("streams.monitor:monitor", "Watch topics, lag, PnL and models live."),
    "features": ("features.cli:features", "Feast repo: apply, get online values, history."),
    "train": ("training.cli:train", "Train, gate and publish model releases."),
    "models": ("training.cli:models", "List, show, verify or roll back releases."),
    "tune": ("training.tune_cli:tune", "Search training hyperparameters with Optuna."),
    "evaluate": ("training.evaluate.cli:evaluate", "Does learning help? Walk history with 3 arms."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = VERBS.get(cmd_name)
        if entry is None:
            return None
        target, help_text = entry
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in {
                "infra",
                "streams",
                "features",
                "training",
                "trader",
            }:
                return _missing(cmd_name, help_text, f"{module_name} is not built yet")
            return _missing(
                cmd_name,
                help_text,
                f"needs the optional dependency {exc.name!r}: pip install 'tradeloop[all]'",
            )
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, VERBS[name][1]) for name in sorted(VERBS)])


def _missing(name: str, help_text: str, why: str) -> click.Command:
    @click.command(name=name, help=help_text, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"`tradeloop {name}`: {why}")

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
@click.version_option(package_name="tradeloop")
def cli(log_level: str) -> None:
    """tradeloop: an event-sourced ES/NQ futures bot that learns while it trades."""
    setup_logging(log_level)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one flat object).")
@click.option(
    "--markdown",
    is_flag=True,
    help="Print every setting, its default and meaning: one Markdown table per context.",
)
def config(as_json: bool, markdown: bool) -> None:
    """Print the effective settings per context with secrets masked."""
    from infra.settings import get_settings, settings_markdown

    if markdown:
        click.echo(settings_markdown(), nl=False)
        return
    settings = get_settings()
    if as_json:
        click.echo(json.dumps(settings.masked(), indent=2, default=str))
        return
    groups: dict[str, dict[str, Any]] = settings.masked_by_context()
    width = max(len(k) for values in groups.values() for k in values)
    for title, values in groups.items():
        click.echo(f"[{title}]")
        for key, value in values.items():
            click.echo(f"  {key:<{width}}  {value}")


def main() -> None:
    """Run the console script."""
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
