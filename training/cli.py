"""`tradeloop train` and `tradeloop models` (list, show, verify, keygen, rollback)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from infra.contracts import MANIFEST_PREFIX, PIT_ENGINES
from infra.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_REFUSED = 0


def _settings(**overrides: Any) -> Settings:
    base = get_settings()
    update = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=update) if update else base


def _model_sets(
    settings: Settings, per_symbol: bool, symbols: Sequence[str] | None
) -> list[tuple[str, list[str] | None]]:
    syms = list(symbols) if symbols else list(settings.symbols)
    sets: list[tuple[str, list[str] | None]] = [("default", syms)]
    if per_symbol:
        sets.extend((s, [s]) for s in syms)
    return sets


def _run_all(
    settings: Settings,
    *,
    per_symbol: bool,
    symbols: Sequence[str] | None,
    since: str | None,
    report_dir: str | None,
    topic: bool,
    pit_engine: str | None,
    progress: bool,
    trigger: str = "once",
    executor: Any = None,
) -> list[Any]:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from training.config import TrainConfig
    from training.pipeline import run_training
    from training.schedule import parse_duration

    cfg = TrainConfig.from_settings(settings)
    start = None
    if since:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=parse_duration(since))
    results = []
    console = Console(stderr=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for model_set, syms in _model_sets(settings, per_symbol, symbols):
        base = Path(report_dir) if report_dir else None
        out = (base / f"{stamp}-{model_set}") if base else None
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[set]}[/] {task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=not progress,
            transient=False,
        ) as bar:
            task = bar.add_task("starting", total=None, set=model_set)

            def step(text: str, _task: Any = task, _bar: Any = bar, _set: str = model_set) -> None:
                _bar.update(_task, description=text)
                log.info("[%s] %s", _set, text)

            result = run_training(
                settings,
                cfg,
                model_set=model_set,
                symbols=syms,
                start=start,
                report_dir=out,
                step=step,
                publish_topic=topic,
                pit_engine=pit_engine,  # type: ignore[arg-type]
                executor=executor,
            )
            bar.update(task, description=f"{result.status} ({trigger})")
        _print_result(result)
        results.append(result)
    return results


def _print_result(result: Any) -> None:
    click.echo(f"[{result.model_set}] {result.status}: {result.message}")
    for v in result.verdicts:
        word = {"release": "release", "champion": "keep   ", "rules": "rules  "}[v.serving]
        click.echo(f"  {v.family:<6} {word}  {v.reason}")
    if result.published is not None:
        p = result.published
        click.echo(f"  manifest {p.latest_uri} (history {p.manifest_uri})")
        click.echo(
            f"  topic    {p.topic}@{p.topic_offset}"
            if p.topic
            else f"  topic    not published: {p.topic_error}"
        )
    if result.report_dir is not None and result.status in ("released", "refused"):
        click.echo(f"  report   {result.report_dir}")


@click.command()
@click.option("--once", "once", is_flag=True, help="Run one training now and exit (default).")
@click.option(
    "--every",
    default=None,
    help="Run on this cadence (e.g. 30m) until stopped; drift alerts start a run early.",
)
@click.option(
    "--per-symbol", is_flag=True, help="Also train one model set per symbol (model set = symbol)."
)
@click.option("--symbols", default=None, help="Comma-separated symbols (default: SYMBOLS).")
@click.option(
    "--since",
    default=None,
    help="Only signals newer than this (e.g. 30d); default: the whole lake.",
)
@click.option(
    "--profile",
    type=click.Choice(["standard", "small"]),
    default=None,
    help="Model sizes (default: TRAIN_PROFILE).",
)
@click.option(
    "--vendor-data",
    default=None,
    help="Vendor bars (CSV/parquet, comma-separated) to backtest into training data.",
)
@click.option(
    "--synthetic-bars",
    type=int,
    default=None,
    help="Simulated bars to backtest into training data (0: none).",
)
@click.option(
    "--report-dir",
    default=None,
    help="Where run reports go (default: TRAIN_REPORT_DIR or {home}/reports/training).",
)
@click.option(
    "--no-topic",
    is_flag=True,
    help="Write the manifest to the store only, not to the models topic.",
)
@click.option(
    "--pit-engine",
    type=click.Choice(PIT_ENGINES),
    default=None,
    help="Point-in-time dataset: duckdb (out of core), asof (pandas), feast, or auto "
    "(Feast while small); default TRAIN_PIT_ENGINE (duckdb).",
)
@click.option(
    "--drift/--no-drift",
    default=True,
    show_default=True,
    help="With --every: start a run when a DriftAlert arrives.",
)
@click.option(
    "--debounce",
    default="30s",
    show_default=True,
    help="With --every: quiet time after the last drift alert before a run.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="auto|ADDRESS",
    help="Run the fits as tasks on this Ray cluster (default: TRAIN_RAY_ADDRESS; none: here).",
)
@click.option("--no-progress", is_flag=True, help="No progress display.")
def train(
    once: bool,
    every: str | None,
    per_symbol: bool,
    symbols: str | None,
    since: str | None,
    profile: str | None,
    vendor_data: str | None,
    synthetic_bars: int | None,
    report_dir: str | None,
    no_topic: bool,
    pit_engine: str | None,
    drift: bool,
    debounce: str,
    ray_address: str | None,
    no_progress: bool,
) -> None:
    """Train the three models, gate them against the champion and publish a signed release."""
    from training.schedule import parse_duration, skip_switch, train_loop

    if once and every:
        raise click.UsageError("give --once or --every, not both")
    settings = _settings(
        train_profile=profile,
        train_vendor_data=vendor_data,
        train_synthetic_bars=synthetic_bars,
        train_ray_address=ray_address,
    )
    syms = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    progress = not no_progress and sys.stderr.isatty()
    kwargs: dict[str, Any] = {
        "per_symbol": per_symbol,
        "symbols": syms,
        "since": since,
        "report_dir": report_dir,
        "topic": not no_topic,
        "pit_engine": pit_engine,
        "progress": progress,
        "executor": executor_or_exit(settings.train_ray_address),
    }
    if not every:
        skip = skip_switch(settings)
        if skip is not None:
            click.echo(f"skip switch {skip} exists: training skipped")
            return
        results = _run_all(settings, **kwargs)
        if any(r.status == "failed" for r in results):
            sys.exit(EXIT_FAILED)
        return
    try:
        every_s = parse_duration(every)
        debounce_s = parse_duration(debounce)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(
        f"training every {every} (drift {'on' if drift else 'off'}, debounce {debounce}); Ctrl-C stops"
    )
    try:
        stats = asyncio.run(
            train_loop(
                settings,
                lambda trigger: _run_all(settings, trigger=trigger, **kwargs),
                every_s=every_s,
                drift=drift,
                debounce_s=debounce_s,
                min_gap_s=min(60.0, every_s),
            )
        )
        click.echo(
            f"stopped: {len(stats.runs)} runs, {stats.skipped} skipped, {stats.failed} failed"
        )
    except KeyboardInterrupt:
        click.echo("stopped")


def executor_or_exit(address: str) -> Any:
    """Return the executor for a Ray address (empty: this process); exit 1 if unreachable."""
    from training.executor import ClusterError, executor_for

    try:
        return executor_for(address)
    except ClusterError as exc:
        click.echo(f"ray: {exc}", err=True)
        sys.exit(EXIT_FAILED)


# models ------------------------------------------------------------------


@click.group()
def models() -> None:
    """List, show, verify or roll back model releases."""


def _registry() -> Any:
    from training.release import Registry

    return Registry(get_settings())


def _summary(m: Any) -> dict[str, Any]:
    return {
        "sequence": m.sequence,
        "release": m.release,
        "model_set": m.model_set,
        "kind": m.kind,
        "rollback_of": m.rollback_of,
        "created": m.ts_event.isoformat(),
        "gate": m.gate.decision if m.gate else None,
        "artifacts": {a.family: a.version for a in m.artifacts},
        "key_id": m.key_id,
    }


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List every release in the store, oldest first."""
    reg = _registry()
    rows = [_summary(m) for m in reg.history()]
    latest = reg.latest()
    if as_json:
        click.echo(
            json.dumps({"latest": latest.release if latest else None, "releases": rows}, indent=2)
        )
        return
    if not rows:
        click.echo(f"no releases in {reg.store.uri(MANIFEST_PREFIX)}")
        return
    for r in rows:
        mark = "*" if latest is not None and r["release"] == latest.release else " "
        arts = " ".join(f"{k}={v}" for k, v in r["artifacts"].items())
        click.echo(
            f"{mark} {r['sequence']:>5}  {r['release']:<26} {r['model_set']:<8} {r['kind']:<8} {r['gate'] or '-':<8} {arts}"
        )


def _resolve(ref: str | None, model_set: str = "default") -> Any:
    from training.config import ReleaseError

    reg = _registry()
    try:
        m = reg.find(ref) if ref else reg.latest(model_set)
    except ReleaseError as exc:
        raise click.ClickException(str(exc)) from None
    if m is None:
        raise click.ClickException("no release published yet")
    return reg, m


@models.command()
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest JSON.")
@click.option(
    "--model-set", default="default", show_default=True, help="Whose latest release, without REF."
)
def show(ref: str | None, as_json: bool, model_set: str) -> None:
    """Show a release (by release string or sequence; default: the latest)."""
    _reg, m = _resolve(ref, model_set)
    if as_json:
        click.echo(json.dumps(m.model_dump(mode="json", by_alias=True), indent=2))
        return
    s = _summary(m)
    click.echo(
        f"release {s['release']}  sequence {s['sequence']}  model set {s['model_set']}  kind {s['kind']}"
    )
    click.echo(f"window  {m.train_window_start} .. {m.train_window_end}   key id {m.key_id}")
    if m.gate:
        click.echo(f"gate    {m.gate.decision}")
        for reason in m.gate.reasons:
            click.echo(f"        {reason}")
    for a in m.artifacts:
        click.echo(f"{a.family:<6} {a.version}  {a.uri}  sha256 {a.sha256[:16]}…  {a.size_bytes} B")
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(a.metrics.items()))
        click.echo(f"       {metrics}")


@models.command()
@click.argument("ref", required=False)
@click.option(
    "--model-set", default="default", show_default=True, help="Whose latest release, without REF."
)
@click.option(
    "--chain",
    is_flag=True,
    help="Verify every manifest of the model set and the links between them.",
)
def verify(ref: str | None, model_set: str, chain: bool) -> None:
    """Verify a release: signature, every artifact's sha256, ONNX load and probe.

    Public keys suffice (MANIFEST_ED25519_PUBLIC_KEYS); with them set, only an Ed25519
    signature by one of them verifies.
    """
    import numpy as np

    from infra.signing import Keyring, SignatureError
    from training.config import ReleaseError, TrainingError
    from training.export import onnx_session, run_onnx
    from training.release import verify_manifest

    if chain:
        reg = _registry()
        try:
            lines = reg.verify_chain(Keyring.from_settings(reg.settings), model_set)
        except ReleaseError as exc:
            raise click.ClickException(str(exc)) from None
        if not lines:
            raise click.ClickException(f"no release of model set {model_set!r}")
        for line in lines:
            click.echo(line)
        click.echo(f"chain ok: {len(lines)} manifests of {model_set}")
        return
    reg, m = _resolve(ref, model_set)
    try:
        kid = verify_manifest(m, Keyring.from_settings(reg.settings))
    except SignatureError as exc:
        raise click.ClickException(f"{m.release}: signature: {exc}") from None
    click.echo(f"{m.release}: signature ok (key id {kid})")
    for art in m.artifacts:
        try:
            blob = reg.fetch(art)
            out = run_onnx(
                onnx_session(blob), art.family, np.asarray([art.probe_input], dtype=np.float32)
            )
        except (ReleaseError, TrainingError) as exc:
            raise click.ClickException(f"{m.release}: {exc}") from None
        diff = float(np.max(np.abs(out.reshape(-1) - np.asarray(art.probe_output))))
        if not diff < 1e-4:
            raise click.ClickException(f"{m.release}: {art.family} probe differs by {diff:.3g}")
        click.echo(f"  {art.family:<6} sha256 ok, loads, probe ok (|diff| {diff:.1e})")


@models.command()
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Private key file (default: $TRADELOOP_HOME/keys/manifest-ed25519.key).",
)
@click.option("--key-id", default="ed1", show_default=True, help="Key id the signatures carry.")
@click.option(
    "--ecdsa",
    is_flag=True,
    help="Also create the P-256 key of the OpenSSF model-signing bundles (MODEL_SIGNING_KEY).",
)
def keygen(out_path: str | None, key_id: str, ecdsa: bool) -> None:
    """Create an Ed25519 release key pair: the private key in a 0600 file, the public key printed."""
    from infra.signing import generate_ed25519, write_secret_file

    if not key_id or any(c in key_id for c in ":, "):
        raise click.UsageError("--key-id must be non-empty, without ':', ',' or spaces")
    path = Path(out_path) if out_path else get_settings().home / "keys" / "manifest-ed25519.key"
    private, public = generate_ed25519()
    try:
        write_secret_file(path, f"{key_id}:{private}\n")
    except FileExistsError:
        raise click.ClickException(f"{path} exists: refusing to overwrite a key") from None
    pub_path = path.with_suffix(".pub")
    pub_path.write_text(f"{key_id}:{public}\n")
    click.echo(f"private key: {path} (0600; trainer only: MANIFEST_ED25519_PRIVATE_KEY)")
    click.echo(f"public key:  {pub_path}")
    click.echo(f"MANIFEST_ED25519_PUBLIC_KEYS={key_id}:{public}")
    if ecdsa:
        from training.openssf import generate_ec_pair

        ec_path = path.with_name("model-signing.pem")
        try:
            ec_public = generate_ec_pair(ec_path)
        except FileExistsError:
            raise click.ClickException(f"{ec_path} exists: refusing to overwrite a key") from None
        click.echo(f"MODEL_SIGNING_KEY={ec_path} (0600; trainer only)")
        click.echo(f"model-signing public key: {ec_public} (for `model_signing verify key`)")


@models.command()
@click.argument("ref")
@click.option("--reason", default="", help="Why (recorded in the manifest).")
@click.option("--no-topic", is_flag=True, help="Write the manifest to the store only.")
def rollback(ref: str, reason: str, no_topic: bool) -> None:
    """Publish a new signed release serving an earlier release's models."""
    from infra.signing import Keyring
    from training.config import ReleaseError
    from training.release import rollback as do_rollback

    reg = _registry()
    try:
        pub = do_rollback(
            reg, ref, Keyring.from_settings(reg.settings), reason=reason, topic=not no_topic
        )
    except ReleaseError as exc:
        raise click.ClickException(str(exc)) from None
    m = pub.manifest
    click.echo(
        f"rolled back: {m.release} (sequence {m.sequence}) serves {ref}'s models; replaces {m.rollback_of}"
    )
    click.echo(
        f"  topic {pub.topic}@{pub.topic_offset}"
        if pub.topic
        else f"  topic not published: {pub.topic_error}"
    )
