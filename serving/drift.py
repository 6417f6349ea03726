"""Population stability between the training reference and a scoring population, per feature.

The reference is fixed at training time as decile edges of each feature on the population scored at the
training as-of date, with the share of customers in each bin (missing values get a bin of their own).
PSI = sum over bins of (actual - expected) x ln(actual / expected), shares floored at 1e-4.
Conventional reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift (the warning threshold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PSI_WARNING = 0.25
N_BINS = 10
FLOOR = 1e-4


def reference_bins(values: np.ndarray) -> dict[str, list[float]]:
    """Interior decile edges and the bin shares (last share = missing) of one feature."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)[1:-1])) if len(finite) else np.array([])
    return {"edges": edges.tolist(), "shares": bin_shares(values, edges).tolist()}


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum()).astype(np.float64)
    return counts / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_report(
    reference: Mapping[str, Mapping[str, Sequence[float]]], columns: Sequence[str], X: np.ndarray
) -> dict[str, float]:
    """PSI of every feature that has a reference, for a scoring matrix ``X`` (columns in ``columns`` order)."""
    out = {}
    for j, name in enumerate(columns):
        ref = reference.get(name)
        if ref is None:
            continue
        out[name] = psi(ref["shares"], bin_shares(X[:, j], np.asarray(ref["edges"], dtype=np.float64)))
    return out
