"""Array helpers shared by the BTYD models: one-dimensional float input, integer-valued frequencies, and an inner
product that avoids BLAS."""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # anything np.asarray accepts


def as_1d(name: str, values: ArrayLike) -> np.ndarray:
    """``values`` as a 1-D float64 array (a scalar becomes one value); ``ValueError`` naming ``name`` otherwise."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def check_integer_frequency(x: np.ndarray) -> np.ndarray:
    """``frequency`` counts repeat purchase days: reject non-integer values (up to float noise of 1e-6) and
    return it rounded to exact integers (as float64)."""
    rounded = np.round(x)
    off = np.abs(x - rounded) > 1e-6
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"frequency must be integer-valued (number of repeat purchase days); customer {i} has {x[i]!r}"
        )
    return rounded


def dot(u: np.ndarray, v: np.ndarray) -> float:
    """Inner product without BLAS (whose thread pool is slow and erratic on busy machines)."""
    return float(np.einsum("i,i->", u, v))
