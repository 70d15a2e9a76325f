"""Walk a history with the learning loop and its baselines on the same bars.

Arms (each a full trader engine in the walk subprocess, `trader.walk`):

- `learning`: starts on the rules; at every cut (`retrain_every` of market time
  after `warmup`) it is trained on what its own event lake holds at that moment
  (signals and outcomes of bars before the cut, stream features folded from
  them), gated against the serving release and, if the gate passes, the signed
  release is published to the evaluation's model store and hot-swapped in;
- `rules`: the rules path throughout;
- `frozen`: the rules until the first release, then that release for good.

With `release` set the run evaluates that already-trained release (arm
`release`) against the rules on the whole history, without training.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.contracts import FeatureUpdate
from infra.contracts.keys import LATEST_MANIFEST_KEY, manifest_key
from infra.contracts.topics import TOPICS
from infra.objectstore import LocalObjectStore
from infra.settings import Settings
from training.config import DataError, TrainConfig, TrainingError
from training.evaluate.checkpoint import Checkpoint, Step
from training.evaluate.walker import WalkProcess

__all__ = [
    "FROZEN",
    "LEARNING",
    "LEARNING_ARMS",
    "RELEASE",
    "RELEASE_ARMS",
    "RULES",
    "EvaluateError",
    "EvaluateOptions",
    "Walked",
    "evaluate",
]

log = logging.getLogger(__name__)

LEARNING, RULES, FROZEN, RELEASE = "learning", "rules", "frozen", "release"
LEARNING_ARMS = (LEARNING, RULES, FROZEN)
RELEASE_ARMS = (RELEASE, RULES)
#: the topic the stream features are folded into (spelled in infra.contracts.topics)
FEATURES_TOPIC = next(n for n, spec in TOPICS.items() if spec.contract is FeatureUpdate)
Progress = Callable[[int, int | None, str], None]  # (bars done, bars in all, what is happening)


class EvaluateError(TrainingError):
    """Raise when an evaluation cannot start or go on (named cause)."""


@dataclass(frozen=True)
class EvaluateOptions:
    """What defines an evaluation run (a resumed run must have the same)."""

    feed: str
    symbols: tuple[str, ...]
    seed: int = 7
    days: int | None = None
    symbol: str | None = None
    tz: str = "UTC"
    bar_ts: str = "close"
    skip_bad_rows: bool = False
    allow_long_bars: bool = False
    retrain_every_s: int = 86_400
    warmup_s: int | None = None
    profile: str = "small"
    release: str | None = None

    def defining(self) -> dict[str, Any]:
        """Return the options as JSON values."""
        out = asdict(self)
        out["symbols"] = list(self.symbols)
        return out

    @property
    def arms(self) -> tuple[str, ...]:
        """Return the arms of this run."""
        return RELEASE_ARMS if self.release else LEARNING_ARMS

    def walk_args(self, out: Path) -> list[str]:
        """Return the walk subprocess's arguments."""
        args = ["--feed", self.feed, "--symbols", ",".join(self.symbols), "--seed", str(self.seed)]
        args += ["--arms", ",".join(self.arms), "--out", str(out / "arms")]
        args += ["--run-id", f"eval{self.seed}", "--tz", self.tz, "--bar-ts", self.bar_ts]
        if self.days is not None:
            args += ["--days", str(self.days)]
        if self.symbol:
            args += ["--symbol", self.symbol]
        if self.skip_bad_rows:
            args.append("--skip-bad-rows")
        if self.allow_long_bars:
            args.append("--allow-long-bars")
        if not self.release:
            args += ["--lake-arms", LEARNING, "--store-dir", str(out / "store")]
        return args


@dataclass
class Walked:
    """What the walk produced: the checkpoint, the walk's final status, where it is."""

    options: EvaluateOptions
    out: Path
    checkpoint: Checkpoint
    finish: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    elapsed_s: float = 0.0
    total_bars: int | None = None


def _no_progress(_bars: int, _total: int | None, _text: str) -> None:
    return None


def evaluate(
    settings: Settings,
    opts: EvaluateOptions,
    out: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    progress: Progress | None = None,
) -> Walked:
    """Run (or resume) the walk; stop after `max_steps` new retrain steps if given."""
    say = progress or _no_progress
    t0 = time.perf_counter()
    ck_path = out / "checkpoint.json"
    if resume:
        ck = Checkpoint.load(ck_path)
        ck.check_options(opts.defining())
    elif ck_path.exists():
        raise EvaluateError(f"{out} holds an evaluation already: pass --resume or another --out")
    else:
        ck = Checkpoint(opts.defining())
    if opts.release:
        walked = _evaluate_release(settings, opts, out, ck, say)
    else:
        walked = _evaluate_learning(settings, opts, out, ck, max_steps, say)
    walked.elapsed_s = time.perf_counter() - t0
    if not walked.paused:
        (out / "walk.json").write_text(json.dumps(walked.finish, indent=1, default=str))
    return walked


def _start(settings: Settings, opts: EvaluateOptions, out: Path) -> WalkProcess:
    shutil.rmtree(out / "arms", ignore_errors=True)  # the walk (re)writes every arm
    walk = WalkProcess(settings, opts.walk_args(out), out / "walk.log")
    if walk.hello.get("first_ts_s") is None:
        walk.close()
        raise DataError(f"{opts.feed}: no bars for {','.join(opts.symbols)}")
    return walk


def _evaluate_release(
    settings: Settings, opts: EvaluateOptions, out: Path, ck: Checkpoint, say: Progress
) -> Walked:
    from training.release import Registry

    assert opts.release is not None
    manifest = Registry(settings).find(opts.release)
    walk = _start(settings, opts, out)
    try:
        key = manifest_key(manifest.sequence)
        walk.swap([RELEASE], key)
        ck.first_ts_s = walk.hello["first_ts_s"]
        say(0, walk.hello.get("total_bars"), f"evaluating {manifest.release}")
        ran = walk.run(None)
        say(int(ran["processed"]), walk.hello.get("total_bars"), "closing positions")
        finish = walk.finish()
    finally:
        walk.close()
    ck.steps = [
        Step(0, int(ck.first_ts_s or 0), "released", "evaluated as given", manifest.release,
             manifest.sequence, key, [RELEASE]),
    ]  # fmt: skip
    ck.save(out / "checkpoint.json")
    return Walked(opts, out, ck, finish, total_bars=walk.hello.get("total_bars"))


def _evaluate_learning(
    settings: Settings,
    opts: EvaluateOptions,
    out: Path,
    ck: Checkpoint,
    max_steps: int | None,
    say: Progress,
) -> Walked:
    from training.release import Registry

    store_dir = out / "store"
    local = settings.model_copy(update={"store_dir": str(store_dir)})
    registry = Registry(local, store=LocalObjectStore(store_dir))
    profiled = local.model_copy(update={"train_profile": opts.profile})
    cfg = TrainConfig.from_settings(profiled, seed=opts.seed)
    _forget_unrecorded(registry, store_dir, ck)
    walk = _start(local, opts, out)
    total = walk.hello.get("total_bars")
    try:
        first = int(walk.hello["first_ts_s"])
        if ck.first_ts_s is not None and ck.first_ts_s != first:
            raise EvaluateError(f"the history starts at {first}, the checkpoint at {ck.first_ts_s}")
        ck.first_ts_s = first
        for step in ck.steps:  # replay to the last checkpoint: same bars, same swaps
            ran = walk.run(step.cut_s)
            say(int(ran["processed"]), total, f"replaying step {step.number}")
            if step.manifest_key:
                walk.swap(step.swapped, step.manifest_key)
        warmup = opts.warmup_s if opts.warmup_s is not None else opts.retrain_every_s
        every = opts.retrain_every_s
        i = 0 if not ck.steps else (ck.steps[-1].cut_s - first - warmup) // every + 1
        frozen = any(FROZEN in s.swapped for s in ck.steps)
        done_now = 0
        while max_steps is None or done_now < max_steps:
            cut = first + warmup + i * every
            i += 1
            ran = walk.run(cut)
            if ran["done"]:
                break
            if ran["bars"] == 0:  # nothing new since the last cut (a market holiday)
                continue
            say(int(ran["processed"]), total, f"step {len(ck.steps)}: training")
            step = _train_step(local, cfg, registry, out, len(ck.steps), cut)
            if step.status == "released":
                step.swapped = [LEARNING] + ([] if frozen else [FROZEN])
                walk.swap(step.swapped, step.manifest_key)
                frozen = True
            ck.steps.append(step)
            ck.save(out / "checkpoint.json")
            done_now += 1
            say(int(ran["processed"]), total, f"step {step.number}: {step.status} {step.release}")
        else:
            ck.save(out / "checkpoint.json")
            walk.close()
            return Walked(opts, out, ck, {}, paused=True, total_bars=total)
        say(int(ran["processed"]), total, "closing positions")
        finish = walk.finish()
    finally:
        walk.close()
    ck.save(out / "checkpoint.json")
    return Walked(opts, out, ck, finish, total_bars=total)


def _forget_unrecorded(registry: Any, store_dir: Path, ck: Checkpoint) -> None:
    """Drop releases published after the last checkpoint (a run stopped mid-step).

    The next step's gate takes the store's latest release as the champion; it must be
    the release the learning arm serves, the last one the checkpoint recorded.
    """
    last = ck.releases[-1].sequence if ck.releases else 0
    for seq in registry.sequences():
        if seq > last:
            (store_dir / manifest_key(seq)).unlink()
            log.info("dropped release sequence %d: published after the last checkpoint", seq)
    latest = store_dir / LATEST_MANIFEST_KEY
    if last:
        registry.store.put(LATEST_MANIFEST_KEY, registry.store.get(manifest_key(last)))
    elif latest.exists():
        latest.unlink()


def refold_features(lake: Path, settings: Settings) -> int:
    """Fold the lake's signals and outcomes into its `features` topic afresh."""
    from training.sources import derive_stream_features

    shutil.rmtree(lake / FEATURES_TOPIC, ignore_errors=True)
    if not lake.exists():
        return 0
    return derive_stream_features(str(lake), settings)


def _train_step(
    settings: Settings,
    cfg: TrainConfig,
    registry: Any,
    out: Path,
    number: int,
    cut_s: int,
) -> Step:
    """Train on the learning arm's lake as of the cut; gate; publish; return the step."""
    from training.datasets import load_lake
    from training.pipeline import run_training

    t0 = time.perf_counter()
    lake = out / "arms" / LEARNING / "lake"
    try:
        refold_features(lake, settings)
        frames = load_lake("real", str(lake), settings)
    except TrainingError as exc:
        return Step(number, cut_s, "failed", str(exc), train_s=time.perf_counter() - t0)
    result = run_training(
        settings,
        cfg,
        lakes=[("real", frames)],
        report_dir=out / "training" / f"step-{number:04d}",
        publish_topic=False,
        pit_engine="asof",
        registry=registry,
    )
    step = Step(number, cut_s, result.status, result.message, train_s=time.perf_counter() - t0)
    if result.published is not None:
        manifest = result.published.manifest
        step.release, step.sequence = manifest.release, manifest.sequence
        step.manifest_key = manifest_key(manifest.sequence)
        step.gate_p_value = manifest.gate.p_value if manifest.gate is not None else None
    log.info("step %d at %d: %s (%s)", number, cut_s, result.status, result.message)
    return step
