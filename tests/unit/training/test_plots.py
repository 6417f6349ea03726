"""training.plots: every figure builds, has the expected lines and bars, and saves as PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training import plots


def _save(fig, tmp_path, name: str) -> None:
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def churn_results() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(float)
    return {"good": (y, np.clip(0.4 * y + 0.6 * rng.random(300), 0, 1)), "random": (y, rng.random(300))}


@pytest.fixture(scope="module")
def value_results() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    actual = rng.gamma(0.5, 100, 300)
    return {"good": (actual, actual * rng.lognormal(0, 0.5, 300)), "random": (actual, rng.random(300))}


def test_plot_roc(churn_results, tmp_path) -> None:
    fig = plots.plot_roc(churn_results)
    assert len(fig.axes[0].lines) == 3  # two models + random diagonal
    _save(fig, tmp_path, "roc")


def test_plot_calibration(churn_results, tmp_path) -> None:
    fig = plots.plot_calibration(churn_results)
    assert len(fig.axes[0].lines) == 3  # two models + perfect diagonal
    _save(fig, tmp_path, "calibration")


def test_plot_gains(churn_results, tmp_path) -> None:
    fig = plots.plot_gains(churn_results)
    assert len(fig.axes[0].lines) == 4  # two models + random + perfect
    _save(fig, tmp_path, "gains")


def test_plot_gains_accepts_values(value_results, tmp_path) -> None:
    fig = plots.plot_gains(value_results)
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    assert "value" in ax.get_ylabel()
    _save(fig, tmp_path, "gains_value")


def test_plot_lorenz(value_results, tmp_path) -> None:
    fig = plots.plot_lorenz(value_results)
    assert len(fig.axes[0].lines) == 4  # two models + oracle + random
    _save(fig, tmp_path, "lorenz")


def test_plot_feature_importance(tmp_path) -> None:
    names = [f"f{i}" for i in range(30)]
    fig = plots.plot_feature_importance(names, np.arange(30.0), top=20)
    ax = fig.axes[0]
    assert len(ax.patches) == 20
    assert ax.get_yticklabels()[-1].get_text() == "f29"  # largest on top
    _save(fig, tmp_path, "importance")


def test_plot_shap_summary(tmp_path) -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(size=(200, 20))
    values[::7, 3] = np.nan
    contributions = np.c_[values * np.arange(1, 21) / 10, np.full(200, -0.5)]  # trailing bias column
    contributions[np.isnan(contributions)] = 0.0
    names = [f"f{i}" for i in range(20)]
    fig = plots.plot_shap_summary(contributions, values, names, top=15)
    ax = fig.axes[0]
    assert len(ax.collections) == 15
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "f19"  # largest contributions on top
    _save(fig, tmp_path, "shap")


def test_plot_backtest(tmp_path) -> None:
    rows = [
        {"fold": f, "model": m, "churn_auc": 0.7 + 0.01 * f, "value_normalized_gini": 0.5, "customers": 10}
        for f in range(4)
        for m in ("lightgbm", "btyd", "naive")
    ]
    fig = plots.plot_backtest(pd.DataFrame(rows))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2  # churn_auc, value_normalized_gini ("customers" is not a metric)
    assert all(len(ax.lines) == 3 for ax in visible)
    _save(fig, tmp_path, "backtest")
