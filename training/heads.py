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
import os
from typing import Any

import numpy as np
import pandas as pd

from serving.model import churn_offset, hybrid_churn, hybrid_value, value_offset
from training.config import DEFAULT_CONFIG, TrainingConfig

OMP_WAIT_POLICY = "passive"
"""OpenMP's wait policy for LightGBM's threads unless the environment sets ``OMP_WAIT_POLICY``: idle threads sleep
instead of spinning between parallel regions. On a shared machine spinning threads fight the other processes for the
cores: 60 rounds on 400,000 rows x 40 features took 58 s on 2 spinning threads, 16 s on 1 and 11 s on 2 passive
ones at load 8 on 2 cores; on free cores it costs wake-up latency (fit_pipeline at 100k customers 134 s against
115 s at load 1.3-1.9; benchmarks/results/training.md). Set ``OMP_WAIT_POLICY=active`` on a dedicated machine.
Results do not depend on it."""


def _lightgbm():
    """The ``lightgbm`` module, with :data:`OMP_WAIT_POLICY` in the environment first (the OpenMP runtime reads it
    once, when LightGBM's library loads: a process that loaded it earlier keeps its policy)."""
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    import lightgbm

    return lightgbm


@dataclasses.dataclass
class FittedHead:
    booster: Any
    params: dict[str, Any]
    best_iteration: int
    valid_score: float
    hybrid: bool = False
    valid_raw: np.ndarray | None = None
    """The raw prediction (P(churn) or expected value) on the validation rows, once computed."""


def offset(frame: pd.DataFrame, kind: str) -> np.ndarray:
    """A hybrid head's ``init_score``: the BTYD prior of each row on the head's raw scale."""
    if kind == "churn":
        return churn_offset(frame["btyd_churn"].to_numpy(dtype=np.float64))
    return value_offset(frame["btyd_value"].to_numpy(dtype=np.float64))


@dataclasses.dataclass
class Split:
    """One split's rows as LightGBM sees them, binned once and reused by every head and kind fitted on them.

    The two heads differ by label and the two kinds (lightgbm, hybrid) only by ``init_score``, neither of which
    touches LightGBM's bins, so one ``lgb.Dataset`` serves all of them: :meth:`use` sets the label and init score
    before each fit. The bins are computed at the first ``lgb.train`` on it (with that fit's parameters, exactly as
    a fresh Dataset would be) and the float64 matrix is then released (``free_raw_data``) unless it is kept in
    :attr:`X` for predictions (the validation rows).
    """

    frame: pd.DataFrame
    dataset: Any
    X: np.ndarray | None = None
    """The feature matrix (rows x columns, float64), kept only when the rows are also predicted."""

    def use(self, kind: str, hybrid: bool) -> Any:
        """The Dataset with ``kind``'s label and, for a hybrid head, its BTYD offset as init score.

        A binned Dataset cannot drop an init score again (``set_init_score(None)`` is a no-op once constructed), so
        fit the plain kinds on a split before the hybrid ones; doing otherwise is refused rather than silently wrong.
        """
        self.dataset.set_label((churn_label if kind == "churn" else value_label)(self.frame))
        if hybrid:
            self.dataset.set_init_score(offset(self.frame, kind))
        elif self.dataset.init_score is not None:
            raise ValueError("a plain head cannot reuse a Dataset that carries a hybrid head's init score")
        return self.dataset


def split(
    frame: pd.DataFrame, columns: list[str], *, reference: Split | None = None, keep_matrix: bool = False
) -> Split:
    """``frame``'s rows for LightGBM (``reference``: bin with that split's bin mappers, as validation rows must)."""
    lgb = _lightgbm()

    X = frame[columns].to_numpy(dtype=np.float64)
    data = lgb.Dataset(
        X,
        feature_name=list(columns),
        reference=reference.dataset if reference is not None else None,
        free_raw_data=True,
    )
    return Split(frame, data, X if keep_matrix else None)


def _as_split(rows: pd.DataFrame | Split, columns: list[str], **kwargs: Any) -> Split:
    return rows if isinstance(rows, Split) else split(rows, columns, **kwargs)


def churn_label(frame: pd.DataFrame) -> np.ndarray:
    return frame["churned"].to_numpy(dtype=np.float64)


def value_label(frame: pd.DataFrame) -> np.ndarray:
    return np.clip(frame["future_value"].to_numpy(dtype=np.float64), 0.0, None)


def fit_head(
    train: pd.DataFrame | Split,
    valid: pd.DataFrame | Split,
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
    ``train`` / ``valid``: frames, or :class:`Split` s binned once and shared by several fits (``valid`` binned with
    ``train``'s bin mappers).
    """
    lgb = _lightgbm()

    base = config.churn_params if kind == "churn" else config.value_params
    metric = "auc" if kind == "churn" else "tweedie"
    params = {**base, **(overrides or {}), "seed": config.seed, "num_threads": config.num_threads, "metric": metric}
    train = _as_split(train, columns)
    valid = _as_split(valid, columns, reference=train)
    dtrain, dvalid = train.use(kind, hybrid), valid.use(kind, hybrid)
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


def refit_head(frame: pd.DataFrame | Split, columns: list[str], head: FittedHead, *, kind: str) -> Any:
    """Retrain a head on all rows with the selected parameters and number of rounds (no early stopping).

    ``frame``: the rows, or a :class:`Split` of them shared by both heads' refits (plain heads first)."""
    lgb = _lightgbm()

    params = {k: v for k, v in head.params.items() if k != "metric"}
    data = _as_split(frame, columns).use(kind, head.hybrid)
    return lgb.train(params, data, num_boost_round=head.best_iteration)


def predict_raw(head: FittedHead, frame: pd.DataFrame | Split, columns: list[str], *, kind: str) -> np.ndarray:
    """A selection model's prediction on ``frame`` (or a :class:`Split` that kept its matrix) at its best
    iteration: P(churn) or expected value."""
    if isinstance(frame, Split):
        frame, X = frame.frame, frame.X
    else:
        X = None
    if X is None:
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
