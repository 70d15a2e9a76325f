"""A deterministic, seeded simulator of correlated 1-minute ES/NQ bars.

The bars follow the exchange calendar (`features.calendar`): a trading day's bars
cover its Globex session (or, with `session="rth"`, its regular trading hours),
early closes included; days the exchange is closed (2024-12-25) have no bars, and
RTH-only runs skip days without regular hours (Thanksgiving).

Each trading day is generated at once from a PCG64 stream, so the bars
depend only on the seed, never on how many are read. A shared Markov chain
switches the market between three regimes: trend (drift in a random direction),
mean reversion (an Ornstein-Uhlenbeck pull to the level where the regime began)
and high volatility (fat-tailed shocks, 2.5x sigma). The first symbol carries the
market shock; the others are correlated with it. Volatility and volume follow an
intraday curve (quiet overnight, a spike at 08:30 ET, a U across the regular
session) and volume also rises with the size of the move. Prices sit on the
instrument's tick grid; `ts_s` is the bar's close.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

import numpy as np

from features.calendar import calendar, utc_offset_s
from trader.core.bar import MarketBar
from trader.core.instruments import BUILTIN, Instrument
from trader.feeds.base import Feed

__all__ = ["SimFeed", "SimParams"]

TREND, MEAN_REVERSION, HIGH_VOL = 0, 1, 2


@dataclass(frozen=True, slots=True)
class SimParams:
    """Price and volume scale of one simulated symbol."""

    start_price: float
    sigma_per_min: float  # log-return std of an average regular-session minute
    base_volume: float  # average regular-session volume per minute
    correlation: float  # with the market shock (the first symbol)


DEFAULT_PARAMS: dict[str, SimParams] = {
    "ES": SimParams(5000.0, 0.00025, 2500.0, 1.0),
    "NQ": SimParams(17500.0, 0.00032, 900.0, 0.88),
}


def _volume_curve(
    minute_et: np.ndarray, ts_s: np.ndarray, rth_open_s: int, rth_close_s: int
) -> np.ndarray:
    """Return the relative activity of a minute (1.0 = an average regular-session minute)."""
    m = minute_et.astype(np.float64)
    rth = (ts_s > rth_open_s) & (ts_s <= rth_close_s)
    since_open = np.clip((ts_s - rth_open_s) / 60.0, 0, None)
    to_close = np.clip((rth_close_s - ts_s) / 60.0, 0, None)
    u_shape = 0.55 + 1.6 * np.exp(-since_open / 25.0) + 0.9 * np.exp(-to_close / 20.0)
    overnight = 0.07 + 0.25 * np.exp(-np.abs(m - 510) / 8.0)  # 08:30 ET data releases
    return np.where(rth, u_shape, overnight)


class SimFeed(Feed):
    """Simulated bars for the given symbols, `days` trading days (None: unbounded)."""

    source = "sim"

    def __init__(
        self,
        symbols: tuple[str, ...] | list[str] = ("ES", "NQ"),
        *,
        seed: int = 7,
        start: date = date(2024, 1, 2),
        days: int | None = None,
        session: Literal["globex", "rth"] = "globex",
        instruments: dict[str, Instrument] | None = None,
    ) -> None:
        super().__init__(f"sim(seed={seed})")
        self.symbols = tuple(symbols)
        self.seed = seed
        self.start = start
        self.days = days
        self.session = session
        self.instruments = instruments or BUILTIN
        self.params = {s: self._params(s) for s in self.symbols}
        self.regime_counts = [0, 0, 0]

    def _params(self, symbol: str) -> SimParams:
        if symbol in DEFAULT_PARAMS:
            return DEFAULT_PARAMS[symbol]
        inst = self.instruments[symbol]
        return SimParams(max(100.0, 400 * inst.tick_size), 0.0003, 1000.0, 0.7)

    def _session_times(self, day: date) -> np.ndarray:
        """Return the bar close times of a day's session (minute bars, open exclusive)."""
        s = calendar().session(day)
        t0, t1 = (
            (s.rth_open_s, s.rth_close_s)
            if self.session == "rth"
            else (
                s.globex_open_s,
                s.globex_close_s,
            )
        )
        return t0 + 60 * np.arange(1, (t1 - t0) // 60 + 1, dtype=np.int64)

    def trading_days(self) -> Iterator[date]:
        """Yield the simulated trading days from `start`: the exchange calendar's sessions."""
        cal = calendar()
        day = self.start
        produced = 0
        while self.days is None or produced < self.days:
            s = cal.session(day)
            if s.has_rth if self.session == "rth" else s.is_open:
                yield day
                produced += 1
            day += timedelta(days=1)

    def __iter__(self) -> Iterator[MarketBar]:
        rng = np.random.Generator(np.random.PCG64(self.seed))
        state = {s: math.log(p.start_price) for s, p in self.params.items()}
        regime = [MEAN_REVERSION, 1.0, 0.0]  # regime, trend direction, anchor offset
        anchors = dict(state)
        last_close: dict[str, float] = {}
        symbols = self.symbols
        for day in self.trading_days():
            ts = self._session_times(day)
            columns = self._simulate_day(rng, ts, state, anchors, regime, last_close)
            rows = [list(zip(*columns[s], strict=True)) for s in symbols]
            for k in range(len(ts)):
                t = int(ts[k])
                for j, s in enumerate(symbols):
                    o, h, lo, c, v = rows[j][k]
                    bar = MarketBar(s, t, o, h, lo, c, v)
                    self.stats.bars += 1
                    self.stats.last_ts_s = t
                    yield bar

    def _simulate_day(
        self,
        rng: np.random.Generator,
        ts: np.ndarray,
        state: dict[str, float],
        anchors: dict[str, float],
        regime: list[float],
        last_close: dict[str, float],
    ) -> dict[str, tuple[list[float], ...]]:
        n = len(ts)
        offset = utc_offset_s(int(ts[0]))
        minute = ((ts + offset) % 86400) // 60
        day = calendar().session_at(int(ts[-1]))
        curve = _volume_curve(minute, ts, day.rth_open_s, day.rth_close_s)
        vol_scale = np.sqrt(curve)
        switch = rng.random(n) < (1.0 / 150.0)
        pick = rng.choice(3, size=n, p=[0.4, 0.4, 0.2])
        direction = rng.choice([-1.0, 1.0], size=n)
        market = rng.standard_normal(n)
        fat = rng.standard_t(4, size=n) / math.sqrt(2.0)
        own = {s: rng.standard_normal(n) for s in self.symbols}
        wick_up = {s: np.abs(rng.standard_normal(n)) for s in self.symbols}
        wick_dn = {s: np.abs(rng.standard_normal(n)) for s in self.symbols}
        vol_noise = {s: rng.lognormal(0.0, 0.35, n) for s in self.symbols}
        # the shared regime path
        regimes = np.empty(n, dtype=np.int64)
        dirs = np.empty(n)
        current, sign = int(regime[0]), regime[1]
        switched = np.zeros(n, dtype=bool)
        sw, pk, dr = switch.tolist(), pick.tolist(), direction.tolist()
        for k in range(n):
            if sw[k]:
                current, sign = pk[k], dr[k]
                switched[k] = True
            regimes[k] = current
            dirs[k] = sign
        regime[0], regime[1] = current, sign
        for r in range(3):
            self.regime_counts[r] += int((regimes == r).sum())
        out: dict[str, tuple[list[float], ...]] = {}
        for s in self.symbols:
            p = self.params[s]
            inst = self.instruments[s]
            rho = p.correlation
            z = rho * market + math.sqrt(max(0.0, 1.0 - rho * rho)) * own[s]
            z = np.where(
                regimes == HIGH_VOL, rho * fat + math.sqrt(max(0.0, 1 - rho * rho)) * own[s], z
            )
            sigma = p.sigma_per_min * vol_scale * np.where(regimes == HIGH_VOL, 2.5, 1.0)
            drift = np.where(regimes == TREND, dirs * 0.15 * sigma, 0.0)
            x = state[s]
            anchor = anchors[s]
            logp = np.empty(n)
            zl, sl, dl, rl, swl = (
                z.tolist(),
                sigma.tolist(),
                drift.tolist(),
                regimes.tolist(),
                switched.tolist(),
            )
            for k in range(n):
                if swl[k]:
                    anchor = x
                pull = -0.04 * (x - anchor) if rl[k] == MEAN_REVERSION else 0.0
                x += dl[k] + pull + sl[k] * zl[k]
                logp[k] = x
            state[s], anchors[s] = x, anchor
            tick = inst.tick_size
            close = np.round(np.exp(logp) / tick) * tick
            prev_close = np.empty(n)
            prev_close[0] = last_close.get(s, close[0])
            prev_close[1:] = close[:-1]
            open_ = prev_close
            price_sigma = sigma * close
            high = (
                np.ceil((np.maximum(open_, close) + 0.6 * wick_up[s] * price_sigma) / tick - 1e-9)
                * tick
            )
            low = (
                np.floor((np.minimum(open_, close) - 0.6 * wick_dn[s] * price_sigma) / tick + 1e-9)
                * tick
            )
            low = np.maximum(low, tick)
            move = np.abs(z)
            volume = np.maximum(
                1.0, np.round(p.base_volume * curve * vol_noise[s] * (0.6 + 0.5 * move * move))
            )
            last_close[s] = float(close[-1])
            out[s] = (open_.tolist(), high.tolist(), low.tolist(), close.tolist(), volume.tolist())
        return out
