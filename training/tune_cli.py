"""`tradeloop tune`: Optuna studies per model family, best parameters into the training profile."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from infra.contracts import PIT_ENGINES
from training.cli import EXIT_FAILED, _settings, executor_or_exit

__all__ = ["tune"]


@click.command()
@click.option("--families", default="meta,exec,sizer", show_default=True, help="Families to tune.")
@click.option(
    "--trials", default=20, show_default=True, type=click.IntRange(1), help="Trials per family."
)
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds per family.")
@click.option(
    "--study", "study_prefix", default="tradeloop", show_default=True, help="Study name prefix."
)
@click.option("--worker", default="", help="This worker's name (recorded on its trials).")
@click.option(
    "--out",
    default=None,
    help="Profile file to write (default TRAIN_PARAMS_FILE or ~/.tradeloop/training_profile.json).",
)
@click.option("--profile", type=click.Choice(["standard", "small"]), default=None)
@click.option("--symbols", default=None, help="Comma-separated symbols (default: all).")
@click.option("--since", default=None, help="Only decisions newer than this (e.g. 7d).")
@click.option("--synthetic-bars", type=int, default=None, help="Add simulated bars to the data.")
@click.option(
    "--pit-engine",
    type=click.Choice(PIT_ENGINES),
    default=None,
    help="Point-in-time dataset engine (default: TRAIN_PIT_ENGINE, duckdb).",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="auto|ADDRESS",
    help="Run the trials as tasks on this Ray cluster (default: TRAIN_RAY_ADDRESS; none: here).",
)
@click.option(
    "--parallel",
    type=click.IntRange(1),
    default=None,
    help="Trials evaluated at once (default: 1 here, the cluster's CPUs on Ray).",
)
def tune(
    families: str,
    trials: int,
    timeout_s: float | None,
    study_prefix: str,
    worker: str,
    out: str | None,
    profile: str | None,
    symbols: str | None,
    since: str | None,
    synthetic_bars: int | None,
    pit_engine: str | None,
    ray_address: str | None,
    parallel: int | None,
) -> None:
    """Search hyperparameters with an Optuna study per family; write the best to the profile.

    Studies live in OPTUNA_STORAGE (a shared PostgreSQL lets several machines run
    trials of one study) or SQLite in the home.
    """
    from training.config import TrainConfig, TrainingError
    from training.schedule import parse_duration
    from training.tune import load_data, storage_url, write_profile
    from training.tune import tune as run_tune

    settings = _settings(
        train_profile=profile,
        train_synthetic_bars=synthetic_bars,
        train_ray_address=ray_address,
    )
    fams = [f.strip() for f in families.split(",") if f.strip()]
    cfg = TrainConfig.from_settings(settings)
    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    start = None
    if since:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=parse_duration(since))
    target = Path(out or settings.train_params_file or settings.home / "training_profile.json")
    backend = storage_url(settings).split(":", 1)[0]
    executor = executor_or_exit(settings.train_ray_address)
    try:
        data = load_data(
            settings, cfg, symbols=syms, start=start, pit_engine=pit_engine, executor=executor
        )
        results = run_tune(
            settings,
            data,
            cfg,
            families=fams,
            n_trials=trials,
            study_prefix=study_prefix,
            timeout_s=timeout_s,
            worker=worker,
            executor=executor,
            parallel=parallel,
        )
    except (TrainingError, ValueError) as exc:
        click.echo(f"tune failed: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    for r in results:
        params = ", ".join(f"{k}={v:.4g}" for k, v in sorted(r.params.items()))
        click.echo(
            f"{r.family:<6} {r.study} ({backend}, {r.trials} trials): best {r.value:.5f}  {params}"
        )
    write_profile(target, results)
    click.echo(f"profile {target} (train with TRAIN_PARAMS_FILE={target})")
