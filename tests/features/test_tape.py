"""TapeFeatures: bit for bit the state of MarketFeatures after every bar, in any chunking."""

from __future__ import annotations

import math
import random
import struct
from datetime import UTC, datetime

import numba
import numpy as np
import pytest

from features.compute import WARMUP_BARS, MarketFeatures
from features.tape import AGO, SLOW_AGO, TapeFeatures, fsum
from trader.feeds.sim import SimFeed

FLOATS = (
    "open", "high", "low", "close", "volume", "atr", "ema_fast", "ema_slow", "avg_gain",
    "avg_loss", "rsi", "long_var", "rv", "bb_mean", "bb_std", "volume_z", "prev_ema_fast",
    "prev_ema_slow", "prev_atr", "prev_bb_mean", "prev_bb_std", "prev_rsi", "prev_high_60",
    "prev_low_60",
)  # fmt: skip
INTS = ("n", "ts_s", "minute_et", "weekday", "trading_day", "minutes_to_close")
BOOLS = ("in_rth", "entries_allowed", "in_session", "ready")
SESSION = ("ts_s", "trading_day", "in_rth", "entries_allowed", "in_session", "minutes_to_close")
COLUMNS = (
    "close", "atr", "prev_atr", "ema_fast", "ema_slow", "prev_ema_fast", "prev_ema_slow",
    "bb_mean", "bb_std", "prev_bb_mean", "prev_bb_std", "rsi", "prev_rsi", "volume_z",
    "prev_high_60", "prev_low_60",
)  # fmt: skip
NAN20 = [math.nan] * 20


def _bits(a: np.ndarray) -> np.ndarray:
    """Return float64 values as their bit patterns (so -0.0 != 0.0 and NaN == NaN)."""
    return np.ascontiguousarray(a, np.float64).view(np.uint64)


def _floats(f: MarketFeatures | TapeFeatures, ready: bool) -> list[float]:
    """Return one bar's float state: attributes, close_ago, slow_ago, values()."""
    return (
        [getattr(f, a) for a in FLOATS]
        + [f.close_ago(k) for k in range(AGO)]
        + [f.slow_ago(k) for k in range(SLOW_AGO)]
        + (f.values() if ready else NAN20)
    )


def _reference(bars: tuple[np.ndarray, ...], symbol: str) -> dict[str, np.ndarray]:
    """Push every bar into a MarketFeatures; return its state after each bar."""
    mf = MarketFeatures(symbol)
    floats, ints, bools, pushed = [], [], [], []
    for ts, o, h, lo, c, v in zip(*(a.tolist() for a in bars), strict=True):
        pushed.append(mf.push(ts, o, h, lo, c, v))
        floats.append(_floats(mf, mf.ready))
        ints.append([getattr(mf, a) for a in INTS])
        bools.append([getattr(mf, a) for a in BOOLS])
    return {
        "floats": np.array(floats),
        "ints": np.array(ints, np.int64),
        "bools": np.array(bools),
        "pushed": np.array(pushed),
    }


def _tape(
    bars: tuple[np.ndarray, ...], symbol: str, sizes: list[int], ref: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Extend a TapeFeatures chunk by chunk; check the columns, return the sought state."""
    tf = TapeFeatures(symbol)
    floats, ints, bools = [], [], []
    pos = 0
    for size in sizes:
        chunk = slice(pos, pos + size)
        before = _bits(np.array(_floats(tf, tf.ready)))
        tf.extend(*(a[chunk] for a in bars))
        if size == 0:  # an empty chunk leaves the sought bar alone
            assert np.array_equal(_bits(np.array(_floats(tf, tf.ready))), before)
        assert tf.m == len(range(*chunk.indices(len(bars[0]))))
        _check_columns(tf, ref, pos)
        for i in range(tf.m):
            tf.seek(0)
            tf.session(i)
            assert [getattr(tf, a) for a in SESSION] == [
                ref["ints"][pos + i, INTS.index(a)]
                if a in INTS
                else ref["bools"][pos + i, BOOLS.index(a)]
                for a in SESSION
            ]
            tf.seek(i)
            row = _floats(tf, tf.ready)
            assert all(type(x) is float for x in row)
            floats.append(row)
            ints.append([getattr(tf, a) for a in INTS])
            assert all(type(x) is int for x in ints[-1])
            bools.append([getattr(tf, a) for a in BOOLS])
            assert all(type(x) is bool for x in bools[-1])
        pos += tf.m
    assert pos == len(bars[0])
    if tf.ready:
        assert np.array_equal(tf.vector(), np.array(tf.values(), np.float32))
        out = np.zeros(20, np.float32)
        assert tf.vector(out) is out and np.array_equal(out, tf.vector())
    return {"floats": np.array(floats), "ints": np.array(ints), "bools": np.array(bools)}


def _check_columns(tf: TapeFeatures, ref: dict[str, np.ndarray], pos: int) -> None:
    """Check one chunk's lists and numpy columns against the reference."""
    rows = slice(pos, pos + tf.m)
    floats, ints, bools = ref["floats"][rows], ref["ints"][rows], ref["bools"][rows]
    lists = tf.lists
    assert lists.ready == ref["pushed"][rows].tolist()
    for name in ("trading_day", "minutes_to_close"):
        assert getattr(lists, name) == ints[:, INTS.index(name)].tolist()
    for name in ("in_rth", "entries_allowed", "in_session"):
        assert getattr(lists, name) == bools[:, BOOLS.index(name)].tolist()
    cols = tf.cols
    for name in COLUMNS:
        assert np.array_equal(_bits(getattr(cols, name)), _bits(floats[:, FLOATS.index(name)]))
    assert cols.n.dtype == np.int64 and np.array_equal(cols.n, ints[:, 0])
    ago = len(FLOATS)
    assert cols.close_ago.shape == (tf.m, AGO) and cols.slow_ago.shape == (tf.m, SLOW_AGO)
    assert np.array_equal(_bits(cols.close_ago), _bits(floats[:, ago : ago + AGO]))
    assert np.array_equal(_bits(cols.slow_ago), _bits(floats[:, ago + AGO : ago + AGO + 7]))


def _assert_identical(bars: tuple[np.ndarray, ...], symbol: str, sizes: list[int]) -> None:
    ref = _reference(bars, symbol)
    got = _tape(bars, symbol, sizes, ref)
    assert np.array_equal(got["ints"], ref["ints"])
    assert np.array_equal(got["bools"], ref["bools"])
    bad = np.flatnonzero((_bits(got["floats"]) != _bits(ref["floats"])).any(axis=1))
    assert bad.size == 0, f"first differing bar {bad[:1]}: {got['floats'][bad[0]]}"


@pytest.fixture(scope="module")
def sim_bars() -> dict[str, tuple[np.ndarray, ...]]:
    rows: dict[str, list[tuple[int, float, float, float, float, float]]] = {"ES": [], "NQ": []}
    for b in SimFeed(("ES", "NQ"), seed=11, days=15):
        rows[b.symbol].append((b.ts_s, b.open, b.high, b.low, b.close, b.volume))
    return {
        s: (np.array([r[0] for r in rs], np.int64), *np.array([r[1:] for r in rs]).T)
        for s, rs in rows.items()
    }


@pytest.mark.parametrize("symbol", ["ES", "NQ"])
def test_sim_bars_identical_in_uneven_chunks(
    sim_bars: dict[str, tuple[np.ndarray, ...]], symbol: str
) -> None:
    bars = sim_bars[symbol]
    assert len(bars[0]) > 20_000  # past 4096-bar absdiff and 128-cycle window resyncs
    _assert_identical(bars, symbol, [1, 7, 1000, 5000, len(bars[0])])


def _odd_walk(m: int, seed: int) -> tuple[np.ndarray, ...]:
    """Return a random walk with gaps, DST and holidays, flat bars, zero and NaN volume, jumps."""
    rng = np.random.default_rng(seed)
    start = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
    step = rng.choice([60, 60, 60, 60, 120, 3600, 7 * 3600, 86400 * 3], m, p=[0.9, 0.03, 0.03,
                      0.01, 0.01, 0.01, 0.005, 0.005])  # fmt: skip
    ts = start + np.cumsum(step).astype(np.int64)
    lr = rng.normal(0.0, 4e-4, m)
    lr[rng.random(m) < 0.002] *= 400.0  # big jumps
    lr[rng.random(m) < 0.1] = 0.0  # unchanged closes
    wild = slice(m // 10, m // 10 + 200)  # moves beyond the price: the absdiff sum rounds
    lr[wild] = np.where(np.arange(200) % 2, 0.7, -0.7) + rng.normal(0.0, 0.05, 200)
    c = 5000.0 * np.exp(np.cumsum(lr))  # off any tick grid: running sums round
    f = slice(m // 5, m // 5 + min(400, m // 3))
    c[f] = c[f.start]  # a long flat stretch: zero std, atr decaying, rsi 50
    o = np.r_[c[0], c[:-1]]
    h = np.maximum(o, c) + rng.choice([0.0, 0.25, 3.0], m)
    lo = np.minimum(o, c) - rng.choice([0.0, 0.25, 3.0], m)
    flat = rng.random(m) < 0.05
    o[flat] = h[flat] = lo[flat] = c[flat]
    o[f] = h[f] = lo[f] = c[f]
    h[7], lo[7] = lo[7] - 1.0, h[7] + 1.0  # an inverted bar
    v = rng.integers(0, 5000, m).astype(np.float64)
    v[rng.random(m) < 0.05] = 0.0
    v[m * 3 // 8 : m * 3 // 8 + 100] = 0.0  # a zero-variance volume window
    v[m // 2 + m // 7] = math.nan  # poisons the running volume moments until a resync
    v[m * 5 // 8] = 1e12
    return ts, o, h, lo, c, v


def test_odd_walk_identical_in_uneven_chunks() -> None:
    bars = _odd_walk(24_000, seed=5)
    _assert_identical(bars, "ES", [3, 0, 58, 1, 4030, 4096, 1, 7, 2560, 3841, 24_000])


def test_tiny_chunks_and_errors_match() -> None:
    ts, o, h, lo, c, v = _odd_walk(300, seed=9)
    _assert_identical((ts, o, h, lo, c, v), "NQ", [1] * 70 + [2] * 40 + [150])
    for bad, error in ((0.0, ValueError), (-1.0, ValueError)):
        c2 = c.copy()
        c2[100] = bad
        mf, tf = MarketFeatures(), TapeFeatures()
        with pytest.raises(error):
            for row in zip(ts.tolist(), o, h, lo, c2, v, strict=True):
                mf.push(*row)
        with pytest.raises(error):
            tf.extend(ts, o, h, lo, c2, v)
    c2 = c.copy()
    c2[0] = 0.0  # the next bar divides by it
    with pytest.raises(ZeroDivisionError):
        TapeFeatures().extend(ts, o, h, lo, c2, v)


def test_state_before_any_bar_matches() -> None:
    mf, tf = MarketFeatures("ES"), TapeFeatures("ES")
    assert [getattr(tf, a) for a in INTS + BOOLS] == [getattr(mf, a) for a in INTS + BOOLS]
    assert (
        _bits(np.array(_floats(tf, False))).tolist() == _bits(np.array(_floats(mf, False))).tolist()
    )
    assert tf.symbol == "ES" and tf.m == 0 and not tf.ready
    with pytest.raises(IndexError):
        tf.close_ago(AGO)
    with pytest.raises(IndexError):
        tf.slow_ago(-1)


def _cpython_fsum_cases() -> list[list[float]]:
    """Return CPython's own fsum test vectors (test_math.testFsum) and edge cases."""
    terms = [1.7**i for i in range(1001)]
    return [
        [],
        [0.0],
        [-0.0],
        [-0.0, -0.0],
        [1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50],
        [2.0**53, -0.5, -(2.0**-54)],
        [2.0**53, 1.0, 2.0**-100],
        [2.0**53 + 10.0, 1.0, 2.0**-100],
        [2.0**53 - 4.0, 0.5, 2.0**-54],
        [1.0 / n for n in range(1, 1001)],
        [(-1.0) ** n / n for n in range(1, 1001)],
        [1e16, 1.0, 1e-16],
        [1e-16, 1.0, 1e16],
        [1e16 - 2.0, 1.0 - 2.0**-53, -(1e16 - 2.0), -(1.0 - 2.0**-53)],
        [2.0**n - 2.0 ** (n + 50) + 2.0 ** (n + 52) for n in range(-1074, 972, 2)] + [-(2.0**1022)],
        [terms[i + 1] - terms[i] for i in range(1000)] + [-terms[1000]],
        [5e-324, 5e-324, -5e-324, 2.0**-1022, -(2.0**-1023)],
        [1.7976931348623157e308, -1.7976931348623157e308, 1.0],
        [math.inf, 1.0],
        [-math.inf, 1e308, 1e308],
        [math.nan, 1.0],
        [math.inf, math.nan],
        [math.inf, -math.inf],
        [1e308, 1e308],
        [1e308, 1e308, -1e308],
    ]


def _random_fsum_cases(rng: random.Random) -> list[list[float]]:
    cases = []
    for _ in range(3000):
        n = rng.choice([1, 2, 3, 5, 20, 30, 100])
        kind = rng.random()
        if kind < 0.3:  # wide exponents, both signs
            xs = [rng.choice([-1, 1]) * rng.random() * 2.0 ** rng.randint(-1070, 1000)
                  for _ in range(n)]  # fmt: skip
        elif kind < 0.6:  # heavy cancellation
            xs = [rng.gauss(0, 1) * 10.0 ** rng.randint(-20, 20) for _ in range(n)]
            xs += [-x * (1 + rng.choice([0.0, 2.0**-52, -(2.0**-53)])) for x in xs]
            rng.shuffle(xs)
        elif kind < 0.8:  # half-way rounding cases
            base = rng.choice([1.0, 2.0**53, 1e16, 3.0])
            xs = [base] + [rng.choice([-1, 1]) * base * 2.0 ** -rng.randint(50, 110)
                           for _ in range(n)]  # fmt: skip
        else:  # the resync's own inputs: squared deviations, closes, volumes
            mean = rng.uniform(-1e4, 1e4)
            xs = [(x - mean) * (x - mean) for x in (rng.gauss(mean, 3.0) for _ in range(n))]
        cases.append(xs)
    return cases


def _fsum_outcome(f: object, xs: list[float]) -> object:
    try:
        r = f(np.array(xs, np.float64)) if f is fsum else math.fsum(xs)  # type: ignore[operator]
    except (OverflowError, ValueError) as exc:
        return type(exc)
    return struct.pack("<d", r)


def test_fsum_port_equals_math_fsum() -> None:
    cases = _cpython_fsum_cases() + _random_fsum_cases(random.Random(20240601))
    for xs in cases:
        assert _fsum_outcome(fsum, xs) == _fsum_outcome(math.fsum, xs), xs
    outcomes = {_fsum_outcome(math.fsum, xs) for xs in _cpython_fsum_cases()}
    assert {OverflowError, ValueError} <= outcomes  # the error paths are exercised too


@numba.njit(cache=True)
def _libm(xs: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    out = np.empty((2, xs.shape[0]))
    for i in range(xs.shape[0]):
        out[0, i] = math.log(xs[i])
        out[1, i] = math.sqrt(xs[i])
    return out


def test_numba_log_and_sqrt_equal_cpython() -> None:
    rng = np.random.default_rng(3)
    xs = np.concatenate(
        [
            np.exp(rng.normal(0.0, 1e-3, 50_000)),  # close ratios
            rng.lognormal(0.0, 30.0, 50_000),
            rng.random(10_000) ** 8,
            [5e-324, 2.0**-1022, 1.0, 2.0, math.inf],
        ]
    )
    got = _libm(xs)
    want = np.array([[math.log(x) for x in xs.tolist()], [math.sqrt(x) for x in xs.tolist()]])
    assert np.array_equal(_bits(got), _bits(want))


def test_values_ready_and_vector_match_after_warmup(
    sim_bars: dict[str, tuple[np.ndarray, ...]],
) -> None:
    bars = tuple(a[:200] for a in sim_bars["ES"])
    tf = TapeFeatures("ES")
    tf.extend(*bars)
    mf = MarketFeatures("ES")
    for i, row in enumerate(zip(*(a.tolist() for a in bars), strict=True)):
        mf.push(*row)
        tf.seek(i)
        assert tf.ready == mf.ready == (i + 1 >= WARMUP_BARS)
        if mf.ready:
            assert tf.vector().tobytes() == mf.vector().tobytes()
        else:
            assert all(math.isnan(x) for x in tf.values())
