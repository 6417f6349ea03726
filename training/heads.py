"""The two LightGBM heads, their calibration and their hyper-parameter search.

- Churn head: binary objective on ``churned``; probabilities calibrated by isotonic regression on the temporal
  validation cutoff.
- Value head: Tweedie objective (variance power 1.3) on ``future_value`` clipped at 0 -- future spend is
  zero-inflated and heavy-tailed, and Tweedie's log link keeps predictions positive. Refunds can make a
  window's net spend negative; those few labels train as 0.

Either head can be *hybrid*: trained with the BTYD prediction made at each row's cutoff as LightGBM's
``init_score`` (log-odds of churn, log of expected value), so the trees learn corrections to the BTYD prior
instead of the whole signal (see :mod:`serving.model` for how a hybrid head scores).

The heads' LightGBM parameters, rounds and search space are fields of :class:`training.config.TrainingConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from serving.model import churn_offset, hybrid_churn, hybrid_value, value_offset
from training.config import DEFAULT_CONFIG, TrainingConfig


@dataclasses.dataclass
class FittedHead:
    booster: Any
    params: dict[str, Any]
    best_iteration: int
    valid_score: float
    hybrid: bool = False


def offset(frame: pd.DataFrame, kind: str) -> np.ndarray:
    """A hybrid head's ``init_score``: the BTYD prior of each row on the head's raw scale."""
    if kind == "churn":
        return churn_offset(frame["btyd_churn"].to_numpy(dtype=np.float64))
    return value_offset(frame["btyd_value"].to_numpy(dtype=np.float64))


def _dataset(frame: pd.DataFrame, columns: list[str], label: np.ndarray, init_score: np.ndarray | None, reference=None):
    import lightgbm as lgb

    return lgb.Dataset(
        frame[columns].to_numpy(dtype=np.float64),
        label=label,
        init_score=init_score,
        feature_name=list(columns),
        reference=reference,
        free_raw_data=False,
    )


def churn_label(frame: pd.DataFrame) -> np.ndarray:
    return frame["churned"].to_numpy(dtype=np.float64)


def value_label(frame: pd.DataFrame) -> np.ndarray:
    return np.clip(frame["future_value"].to_numpy(dtype=np.float64), 0.0, None)


def fit_head(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    columns: list[str],
    *,
    kind: str,
    config: TrainingConfig = DEFAULT_CONFIG,
    overrides: dict[str, Any] | None = None,
    hybrid: bool = False,
) -> FittedHead:
    """Train one head with early stopping on the validation rows (``hybrid``: on the BTYD prior as offset).

    Parameters: the config's ``churn_params`` / ``value_params`` with ``overrides`` (one draw of the search), its
    seed and threads; at most ``max_rounds`` rounds, stopped after ``early_stopping_rounds`` without progress.
    """
    import lightgbm as lgb

    base = config.churn_params if kind == "churn" else config.value_params
    label = churn_label if kind == "churn" else value_label
    metric = "auc" if kind == "churn" else "tweedie"
    params = {**base, **(overrides or {}), "seed": config.seed, "num_threads": config.num_threads, "metric": metric}
    dtrain = _dataset(train, columns, label(train), offset(train, kind) if hybrid else None)
    dvalid = _dataset(valid, columns, label(valid), offset(valid, kind) if hybrid else None, reference=dtrain)
    result: dict[str, Any] = {}
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=config.max_rounds,
        valid_sets=[dvalid],
        valid_names=["valid"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(result),
        ],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    return FittedHead(booster, params, best, float(result["valid"][metric][best - 1]), hybrid)


def refit_head(frame: pd.DataFrame, columns: list[str], head: FittedHead, *, kind: str) -> Any:
    """Retrain a head on all rows with the selected parameters and number of rounds (no early stopping)."""
    import lightgbm as lgb

    label = churn_label if kind == "churn" else value_label
    params = {k: v for k, v in head.params.items() if k != "metric"}
    init = offset(frame, kind) if head.hybrid else None
    return lgb.train(params, _dataset(frame, columns, label(frame), init), num_boost_round=head.best_iteration)


def predict_raw(head: FittedHead, frame: pd.DataFrame, columns: list[str], *, kind: str) -> np.ndarray:
    """A selection model's prediction on ``frame`` at its best iteration: P(churn) or expected value."""
    X = frame[columns].to_numpy(dtype=np.float64)
    if not head.hybrid:
        return head.booster.predict(X, num_iteration=head.best_iteration)
    trees = head.booster.predict(X, num_iteration=head.best_iteration, raw_score=True)
    if kind == "churn":
        return hybrid_churn(frame["btyd_churn"].to_numpy(dtype=np.float64), trees)
    return hybrid_value(frame["btyd_value"].to_numpy(dtype=np.float64), trees)


def fit_isotonic(raw: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic calibration knots (x ascending, y non-decreasing in [0, 1]) for ``np.interp``."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(raw, y)
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def sample_params(config: TrainingConfig = DEFAULT_CONFIG) -> list[dict[str, Any]]:
    """``config.tune`` parameter sets for the search: the defaults first (``{}``), then draws from the config's
    ``search_space`` seeded by its ``seed``."""
    rng = np.random.default_rng(config.seed)
    draws: list[dict[str, Any]] = [{}]
    while len(draws) < config.tune:
        draws.append({k: v[int(rng.integers(len(v)))] for k, v in config.search_space.items()})
    return draws[: config.tune]
