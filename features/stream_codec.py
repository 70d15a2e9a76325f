"""Explicit state of the river statistics the stream features keep.

Nothing here chooses a class or runs code from the data: the caller builds a
fresh statistic (the template, with the parameters the code defines) and
`restore` writes validated numbers into it. River's Rust-backed objects
(`EWMean`, `ADWIN`) are read and written through their own fixed binary layout,
which is unpacked into named fields on the way out and packed again from checked
fields on the way in, so their decoder only ever sees bytes this module built.
Floats round-trip bit for bit (orjson writes the shortest exact repr; non-finite
values are written as the strings "nan", "inf", "-inf").
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from typing import Any

from river import stats, utils

__all__ = ["StateDecodeError", "dump_float", "export", "load_float", "restore"]

MAX_TIMED_ENTRIES = 100_000  # a signal window holds one hour of signals
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class StateDecodeError(TypeError, ValueError):
    """Bytes or a document that are not a stream state piece this code wrote."""


def dump_float(x: float) -> float | str:
    """Return a JSON-safe float (non-finite values as strings)."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def load_float(v: Any, what: str) -> float:
    """Return the float a `dump_float` value stands for; refuse anything else."""
    if isinstance(v, float):
        return v
    if isinstance(v, str) and v in _NON_FINITE:
        return _NON_FINITE[v]
    raise StateDecodeError(f"{what}: expected a float, got {type(v).__name__}")


def _num(v: Any, what: str) -> float | int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return load_float(v, what)


def _int(v: Any, what: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise StateDecodeError(f"{what}: expected an integer in [{lo}, {hi}], got {v!r:.40}")
    return v


def _list(v: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(v, list) or len(v) > limit:
        raise StateDecodeError(f"{what}: expected a list of at most {limit} items")
    return v


def _fields(doc: Any, what: str, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(doc, dict) or set(doc) != set(names):
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise StateDecodeError(f"{what}: expected fields {sorted(names)}, got {got}")
    return doc


def _naive_ts(v: Any, what: str) -> dt.datetime:
    if not isinstance(v, str):
        raise StateDecodeError(f"{what}: expected an ISO timestamp")
    try:
        ts = dt.datetime.fromisoformat(v)
    except ValueError as exc:
        raise StateDecodeError(f"{what}: {exc}") from None
    if ts.tzinfo is not None:
        raise StateDecodeError(f"{what}: expected a naive UTC timestamp")
    return ts


# River's Rust objects: bincode (little-endian, fixed-width ints, u64 lengths) ------

_EWM = struct.Struct("<ddd?d")  # mean, alpha, 1 - alpha, initialized; binding's alpha
_AW_HEAD = struct.Struct("<diQddddddiiii")
_AW_TAIL = struct.Struct("<diQii")  # the binding's own constructor arguments
_U64 = struct.Struct("<Q")


def _ewm_export(rs: Any) -> dict[str, Any]:
    mean, _alpha, rest, initialized, _ = _EWM.unpack(rs.__getstate__())
    return {"mean": dump_float(mean), "one_minus_alpha": rest, "initialized": initialized}


def _ewm_restore(obj: stats.EWMean, doc: Any, what: str) -> None:
    d = _fields(doc, what, ("mean", "one_minus_alpha", "initialized"))
    if not isinstance(d["initialized"], bool):
        raise StateDecodeError(f"{what}.initialized: expected a boolean")
    alpha = float(obj.fading_factor)
    rest = load_float(d["one_minus_alpha"], f"{what}.one_minus_alpha")
    if rest != 1.0 - alpha:
        raise StateDecodeError(f"{what}: state of another fading factor")
    mean = load_float(d["mean"], f"{what}.mean")
    obj._ewmean.__setstate__(_EWM.pack(mean, alpha, rest, d["initialized"], alpha))


def _aw_export(rs: Any) -> dict[str, Any]:
    blob = rs.__getstate__()
    head = _AW_HEAD.unpack_from(blob, 0)
    pos = _AW_HEAD.size
    (n,) = _U64.unpack_from(blob, pos)
    pos += 8
    buckets = []
    for _ in range(n):
        _cap, idx, n_tot = struct.unpack_from("<QQQ", blob, pos)
        pos += 24
        totals = struct.unpack_from(f"<{n_tot}d", blob, pos)
        pos += 8 * n_tot
        (n_var,) = _U64.unpack_from(blob, pos)
        variances = struct.unpack_from(f"<{n_var}d", blob, pos + 8)
        pos += 8 + 8 * n_var
        buckets.append(
            {
                "idx": idx,
                "totals": [dump_float(x) for x in totals],
                "variances": [dump_float(x) for x in variances],
            }
        )
    names = ("total", "variance", "width", "total_width")
    out: dict[str, Any] = {k: dump_float(v) for k, v in zip(names, head[5:9], strict=True)}
    out.update(zip(("n_buckets", "max_n_buckets", "tick", "n_detections"), head[9:], strict=True))
    out["buckets"] = buckets
    return out


def _aw_restore(obj: Any, doc: Any, drift_detected: bool, what: str) -> None:
    names = ("total", "variance", "width", "total_width")
    counters = ("n_buckets", "max_n_buckets", "tick", "n_detections")
    d = _fields(doc, what, (*names, *counters, "buckets"))
    cap = int(obj.max_buckets)
    floats = [load_float(d[k], f"{what}.{k}") for k in names]
    ints = [_int(d[k], f"{what}.{k}") for k in counters]
    buckets = _list(d["buckets"], f"{what}.buckets", 64)
    if not buckets:
        raise StateDecodeError(f"{what}.buckets: at least one bucket row")
    body = [
        _AW_HEAD.pack(
            float(obj.delta),
            int(obj.clock),
            cap,
            float(obj.min_window_length),
            float(obj.grace_period),
            *floats,
            *ints,
        ),
        _U64.pack(len(buckets)),
    ]
    for i, raw in enumerate(buckets):
        b = _fields(raw, f"{what}.buckets[{i}]", ("idx", "totals", "variances"))
        rows = []
        for k in ("totals", "variances"):
            xs = _list(b[k], f"{what}.buckets[{i}].{k}", cap + 1)
            if len(xs) != cap + 1:
                raise StateDecodeError(f"{what}.buckets[{i}].{k}: expected {cap + 1} values")
            rows.append([load_float(x, f"{what}.buckets[{i}].{k}") for x in xs])
        idx = _int(b["idx"], f"{what}.buckets[{i}].idx", 0, cap)
        body.append(struct.pack("<QQQ", cap, idx, cap + 1))
        body.append(struct.pack(f"<{cap + 1}d", *rows[0]))
        body.append(_U64.pack(cap + 1) + struct.pack(f"<{cap + 1}d", *rows[1]))
    body.append(
        _AW_TAIL.pack(
            float(obj.delta),
            int(obj.clock),
            cap,
            int(obj.min_window_length),
            int(obj.grace_period),
        )
    )
    obj._helper.__setstate__(b"".join(body))
    obj._drift_detected = drift_detected


# Python objects -------------------------------------------------------------------


def _args_value(entry: Any) -> float:
    args, kwargs = entry
    if len(args) != 1 or kwargs:
        raise TypeError(f"unexpected rolling entry {entry!r}")
    return float(args[0])


def export(obj: Any) -> Any:
    """Return the explicit state of one statistic (a JSON-ready value)."""
    if isinstance(obj, utils.Rolling):
        return {
            "obj": export(obj.obj),
            "window": [dump_float(_args_value(e)) for e in obj.window],
        }
    if isinstance(obj, utils.TimeRolling):
        return {
            "obj": export(obj.obj),
            "timestamps": [t.isoformat() for t in obj._timestamps],
            "datum": [dump_float(_args_value(e)) for e in obj._datum],
            "latest": obj._latest.isoformat(),
        }
    if isinstance(obj, stats.Var):
        return {"mean": export(obj.mean), "S": dump_float(obj._S)}
    if isinstance(obj, stats.Mean):
        return {"n": dump_float(float(obj.n)), "mean": dump_float(obj._mean)}
    if isinstance(obj, stats.Sum):
        return {"sum": dump_float(float(obj.sum))}
    if isinstance(obj, stats.EWMean):
        return _ewm_export(obj._ewmean)
    if type(obj).__name__ == "ADWIN":
        return {"drift_detected": bool(obj.drift_detected), "window": _aw_export(obj._helper)}
    raise TypeError(f"no explicit state for {type(obj).__name__}")


def restore(template: Any, doc: Any, what: str) -> None:
    """Write a state from `export` into a fresh statistic of the same kind and parameters."""
    if isinstance(template, utils.Rolling):
        d = _fields(doc, what, ("obj", "window"))
        xs = _list(d["window"], f"{what}.window", template.window_size)
        restore(template.obj, d["obj"], f"{what}.obj")
        template.window.extend(((load_float(x, f"{what}.window"),), {}) for x in xs)
    elif isinstance(template, utils.TimeRolling):
        d = _fields(doc, what, ("obj", "timestamps", "datum", "latest"))
        ts = _list(d["timestamps"], f"{what}.timestamps", MAX_TIMED_ENTRIES)
        xs = _list(d["datum"], f"{what}.datum", MAX_TIMED_ENTRIES)
        if len(ts) != len(xs):
            raise StateDecodeError(f"{what}: timestamps and datum differ in length")
        restore(template.obj, d["obj"], f"{what}.obj")
        template._timestamps = [_naive_ts(t, f"{what}.timestamps") for t in ts]
        if template._timestamps != sorted(template._timestamps):
            raise StateDecodeError(f"{what}.timestamps: not in order")
        template._datum = [((load_float(x, f"{what}.datum"),), {}) for x in xs]
        template._latest = _naive_ts(d["latest"], f"{what}.latest")
    elif isinstance(template, stats.Var):
        d = _fields(doc, what, ("mean", "S"))
        restore(template.mean, d["mean"], f"{what}.mean")
        template._S = load_float(d["S"], f"{what}.S")
    elif isinstance(template, stats.Mean):
        d = _fields(doc, what, ("n", "mean"))
        template.n = _num(d["n"], f"{what}.n")
        template._mean = load_float(d["mean"], f"{what}.mean")
    elif isinstance(template, stats.Sum):
        template.sum = _num(_fields(doc, what, ("sum",))["sum"], f"{what}.sum")
    elif isinstance(template, stats.EWMean):
        _ewm_restore(template, doc, what)
    elif type(template).__name__ == "ADWIN":
        d = _fields(doc, what, ("drift_detected", "window"))
        if not isinstance(d["drift_detected"], bool):
            raise StateDecodeError(f"{what}.drift_detected: expected a boolean")
        _aw_restore(template, d["window"], d["drift_detected"], f"{what}.window")
    else:
        raise TypeError(f"no explicit state for {type(template).__name__}")
