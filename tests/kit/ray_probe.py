"""Tiny task functions that show where an executor ran them (light imports, for Ray workers)."""

from __future__ import annotations

import os

import numpy as np


def where(x: np.ndarray) -> tuple[int, float]:
    """Return the running process's id and the sum of `x`."""
    return os.getpid(), float(np.sum(x))


def fails() -> None:
    """Raise the error a task's caller must see."""
    raise ValueError("bad row 7")
