"""serving.drift: bin shares (missing values in a bin of their own) and PSI, exact values on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.drift import FLOOR, bin_shares, drift_report, psi, reference_bins


def test_bin_shares_count_each_value_once_and_missing_last() -> None:
    shares = bin_shares(np.array([1.0, 2.0, 3.0, np.nan]), np.array([1.5, 2.5]))
    assert shares.tolist() == [0.25, 0.25, 0.25, 0.25]
    # a value on an edge belongs to the bin above it; infinities count as missing
    assert bin_shares(np.array([1.5, 2.5, np.inf]), np.array([1.5, 2.5])).tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3]
    assert bin_shares(np.array([]), np.array([1.0])).tolist() == [0.0, 0.0, 0.0]


def test_psi_by_hand() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5) = 0.25 ln 2 + 0.25 ln 1.5 = 0.25 ln 3
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(3), rel=1e-15)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    # empty bins are floored at 1e-4: (1e-4 - 1) ln(1e-4) + (1 - 1e-4) ln(1e4)
    assert psi([1.0, 0.0], [0.0, 1.0]) == pytest.approx(2 * (1 - FLOOR) * math.log(1 / FLOOR), rel=1e-12)


def test_reference_bins_are_deciles_with_equal_shares() -> None:
    ref = reference_bins(np.append(np.arange(1.0, 11.0), np.nan))  # 1..10 and one missing value
    # numpy's linear quantiles of 1..10 at 0.1 .. 0.9: 1.9, 2.8, ..., 9.1
    np.testing.assert_allclose(ref["edges"], [1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1], rtol=1e-12)
    np.testing.assert_allclose(ref["shares"], [1 / 11] * 11, rtol=1e-12)


def test_constant_and_all_missing_features_have_no_interior_edges() -> None:
    assert reference_bins(np.full(5, 2.0)) == {"edges": [2.0], "shares": [0.0, 1.0, 0.0]}
    assert reference_bins(np.full(2, np.nan)) == {"edges": [], "shares": [0.0, 1.0]}


def test_drift_report_covers_the_features_with_a_reference() -> None:
    reference = {"a": {"edges": [1.5], "shares": [0.5, 0.5, 0.0]}}
    X = np.array([[1.0, 9.0], [2.0, 9.0], [2.0, 9.0], [2.0, 9.0]])
    report = drift_report(reference, ["a", "b"], X)
    # actual shares of a: 0.25, 0.75, 0 -> 0.25 ln 3 as above; the empty missing bin adds (1e-4 - 1e-4) ln 1 = 0
    assert list(report) == ["a"] and report["a"] == pytest.approx(0.25 * math.log(3), rel=1e-12)
