"""CPython's exactly rounded `math.fsum`, compiled with numba for the feature tape."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["fsum"]


@numba.njit(cache=True)
def fsum(xs: np.ndarray) -> float:
    """Return the exactly rounded sum of a float64 array, as CPython's `math.fsum`."""
    p = np.empty(xs.shape[0] + 1)
    n = 0
    special = 0.0
    inf_sum = 0.0
    for k in range(xs.shape[0]):
        x = xs[k]
        xsave = x
        i = 0
        for j in range(n):
            y = p[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                p[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            if not math.isfinite(x):
                if math.isfinite(xsave):
                    raise OverflowError("intermediate overflow in fsum")
                if math.isinf(xsave):
                    inf_sum += xsave
                special += xsave
                n = 0
            else:
                p[n] = x
                n += 1
    if special != 0.0:
        if math.isnan(inf_sum):
            raise ValueError("-inf + inf in fsum")
        return special
    hi = 0.0
    if n > 0:
        n -= 1
        hi = p[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = p[n]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and p[n - 1] < 0.0) or (lo > 0.0 and p[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi
