"""The streams worker's changelog is untrusted input: state pieces are JSON documents
with an explicit schema, nothing read from Kafka is unpickled, and a malicious record
on the changelog topic becomes a dead letter while the worker carries on."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from features.stream import KeyState, StateDecodeError, StreamFeatureState, derived_id
from infra.bus import KafkaBus
from infra.contracts import DeadLetter, DriftAlert, FeatureUpdate, TradeOutcome, decode
from infra.offsets import read_topics_to_end
from infra.settings import Settings
from tests import ROOT
from tests.features.test_stream_features import outcome
from tests.kit.harness import WorkerProcess, produce, wait_for
from tests.kit.synth import synthetic_events


class _Payload:
    """An object whose unpickling creates a file (stands for any code an attacker picks)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _outcome(i: int, r: float) -> TradeOutcome:
    return outcome(i, r).model_copy(update={"event_id": f"sec-{i}"})


def _rust_states(ks: KeyState) -> dict[str, bytes]:
    out = {}
    for name, stat in ks.stats.items():
        inner = getattr(stat, "_helper", None) or getattr(stat, "_ewmean", None)
        if inner is not None:
            out[name] = inner.__getstate__()
    return out


def _drifted_state() -> StreamFeatureState:
    state = StreamFeatureState()
    state.learn_many(list(synthetic_events(3000)))  # type: ignore[arg-type]
    for i in range(400):  # enough trades for ADWIN to compress buckets and detect drift
        state.learn(_outcome(i, 1.0 + 0.1 * math.sin(i) if i < 200 else -1.0))
    return state


def test_a_pickled_piece_executes_nothing_and_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Payload(marker))
    with pytest.raises(StateDecodeError, match="not JSON"):
        KeyState.from_bytes(blob)
    assert not marker.exists()


def test_every_piece_round_trips_exactly_including_river_internals() -> None:
    state = _drifted_state()
    piece = state.store["o|ES|S2"]
    assert piece.stats["adwin"].width < piece.stats["count"]  # a drift cut the window
    for key, piece in state.store.items():
        blob = piece.to_bytes()
        doc = orjson.loads(blob)
        assert doc["schema"] == "tradeloop.stream_state" and doc["version"] == 2, key
        back = KeyState.from_bytes(blob)
        assert back.to_bytes() == blob, key
        assert _rust_states(back) == _rust_states(piece), key
        assert back.values == piece.values and back.positions == piece.positions


def test_restored_adwin_detects_exactly_like_the_original() -> None:
    a = StreamFeatureState()
    for i in range(150):
        a.learn(_outcome(i, 1.0 + 0.1 * math.sin(i)))
    b = StreamFeatureState.from_state(a.to_state())
    alerts = 0
    for i in range(150, 400):
        ev = _outcome(i, -1.0 + 0.05 * math.cos(i))
        out = a.learn(ev)
        assert [o.model_dump() for o in out] == [o.model_dump() for o in b.learn(ev)]
        alerts += sum(isinstance(o, DriftAlert) for o in out)
    assert alerts > 0
    assert _rust_states(a.store["o|ES|S2"]) == _rust_states(b.store["o|ES|S2"])


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    def adwin(d: dict[str, Any]) -> dict[str, Any]:
        return d["stats"]["adwin"]["window"]  # type: ignore[no-any-return]

    def set_(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def f(d: dict[str, Any]) -> None:
            *head, last = path.split(".")
            for p in head:
                d = d[int(p)] if isinstance(d, list) else d[p]
            d[last] = value  # type: ignore[index]

        return f

    return [
        ("old version", set_("version", 1)),
        ("other schema", set_("schema", "x")),
        ("unknown kind", set_("kind", "z")),
        ("key separator in symbol", set_("symbol", "ES|x")),
        ("extra field", set_("extra", 1)),
        ("string count", set_("stats.count", "7")),
        ("bool as float", set_("stats.cum_r", True)),
        ("window too long", set_("stats.r.window", [1.0] * 51)),
        ("int in window", set_("stats.r.window", [1])),
        ("ewm of another factor", set_("stats.ewm.one_minus_alpha", 0.5)),
        ("bucket index past capacity", lambda d: adwin(d)["buckets"][0].update(idx=6)),
        ("short bucket", lambda d: adwin(d)["buckets"][0].update(totals=[0.0])),
        ("no buckets", lambda d: adwin(d).update(buckets=[])),
        ("negative tick", lambda d: adwin(d).update(tick=-1)),
        ("unknown feature", set_("values.pwn", 1.0)),
        ("bad position", set_("positions", {"t": 1})),
        ("naive last ts", set_("last_ts_event", "2024-03-04T14:30:00")),
        ("missing stat", lambda d: d["stats"].pop("ewm")),
    ]


@pytest.mark.parametrize("case", _mutations(), ids=lambda c: c[0])
def test_malformed_documents_raise_a_typed_error(
    case: tuple[str, Callable[[dict[str, Any]], None]],
) -> None:
    state = StreamFeatureState()
    for i in range(60):
        state.learn(_outcome(i, 1.0 if i % 3 else -1.0))
    doc = orjson.loads(state.store["o|ES|S2"].to_bytes())
    case[1](doc)
    with pytest.raises(StateDecodeError):
        KeyState.from_bytes(orjson.dumps(doc))


def test_no_code_executing_decoder_in_the_product() -> None:
    pattern = re.compile(
        r"\bpickle\.loads?\(|\bimport pickle|torch\.load\(|joblib\.load|allow_pickle=True"
        r"|yaml\.load\(|yaml\.unsafe_load|\bmarshal\.loads?\(|\bdill\b|cloudpickle"
    )
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("infra", "streams", "features", "training", "trader")
        for path in (ROOT / package).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


async def _read(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Return every record of `topic` (all partitions, from the beginning to the true end)."""
    out: list[tuple[bytes | None, bytes | None]] = []
    await read_topics_to_end(
        KafkaBus(settings), [topic], lambda msgs: out.extend((m.key, m.value) for m in msgs)
    )
    return out


def _read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    return asyncio.run(_read(settings, topic))


async def _topic_names(settings: Settings) -> list[str]:
    admin = await KafkaBus(settings).admin()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


def _feature(settings: Settings, event: TradeOutcome) -> FeatureUpdate | None:
    want = derived_id(event.event_id, "strategy_stats")
    for _, value in _read_topic(settings, settings.topic("features")):
        update = decode(value or b"", FeatureUpdate)
        if update.event_id == want:
            return update
    return None


def test_worker_dead_letters_a_pickle_on_its_changelog_and_executes_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(TOPIC_PARTITIONS=1)
    args = ["--no-feast", "--no-sink", "--commit-interval", "0.2"]
    first, second = _outcome(0, 1.0), _outcome(1, 2.0)
    produce(settings, [first])
    worker = WorkerProcess(settings, tmp_path / "w1.log", args=args).start()
    try:
        wait_for(lambda: _feature(settings, first), 90, 0.5, "the first update")
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    names = asyncio.run(_topic_names(settings))
    changelog = next(n for n in names if n.startswith(settings.topic_prefix) and "changelog" in n)
    marker = tmp_path / "pwned"
    key = json.dumps("o|ES|S2").encode()  # the table's key codec
    bus = KafkaBus(settings)

    async def inject() -> None:
        async with bus.producer() as producer:
            await producer.send(changelog, pickle.dumps(_Payload(marker)), key=key)

    asyncio.run(inject())
    produce(settings, [second])
    worker = WorkerProcess(settings, tmp_path / "w2.log", args=args).start()
    try:
        update = wait_for(lambda: _feature(settings, second), 90, 0.5, "the second update")
        dead = wait_for(
            lambda: [
                d
                for _, v in _read_topic(settings, settings.topic("dlq"))
                if (d := decode(v or b"", DeadLetter)).source_topic == changelog
            ],
            30,
            1.0,
            "the changelog's dead letter",
        )
        assert worker.alive
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert not marker.exists(), "the changelog record was unpickled"
    assert len(dead) == 1 and dead[0].error_type == "StateDecodeError"
    assert dead[0].payload() == pickle.dumps(_Payload(marker))
    # the bad piece was dropped: the key started afresh with the second trade
    assert update.values["trade_count"] == 1.0 and update.values["mean_r"] == 2.0
    # the key's next write replaced the bad record: a restart reads a good piece
    assert (
        KeyState.from_bytes(
            [v for k, v in _read_topic(settings, changelog) if k == key][-1] or b""
        ).last_event_id
        == second.event_id
    )
