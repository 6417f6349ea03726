"""The training choices of one run, in one frozen object: :class:`TrainingConfig`.

Everything a training run decides that is not data -- the horizon, how training cutoffs are laid out, the
LightGBM heads' parameters and their search, the level estimator's backtest, the tier pyramid, margin and
discount -- is a field here, with today's values as defaults. The config travels CLI -> job
(:mod:`training.jobs`) -> pipeline (:func:`training.pipeline.fit_pipeline`) and is logged whole to MLflow
(``training_config.json`` plus flattened ``config.*`` params), so a run can be read back and repeated
(``retention train --config training_config.json``).

All durations are in days (UTC calendar days); shares are fractions of the customer population in (0, 1).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from features.contract import ContractError
from features.labels import CUTOFF_STEP_DAYS, MAX_CUTOFFS, MIN_HISTORY_DAYS

__all__ = ["DEFAULT_CONFIG", "TrainingConfig", "training_config"]

_CHURN_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    # shallow trees: the churn head is explained on every online call (TreeSHAP, ``pred_contrib``), whose cost
    # grows with leaves x depth^2 per tree. 15 leaves of depth <= 5 explain a row in 0.36x the time of LightGBM's
    # default 31 unbounded leaves at the same validation AUC (benchmarks/bench_explain.py, results/explain.md)
    "max_depth": 5,
    "num_leaves": 15,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
}
_VALUE_PARAMS: dict[str, Any] = {
    **_CHURN_PARAMS,
    "max_depth": -1,
    "num_leaves": 31,
    "objective": "tweedie",
    "tweedie_variance_power": 1.3,
}
_SEARCH_SPACE: dict[str, tuple[Any, ...]] = {
    "learning_rate": (0.03, 0.05, 0.1),
    "num_leaves": (15, 31, 63),
    "min_data_in_leaf": (50, 100, 300),
    "feature_fraction": (0.7, 0.9, 1.0),
    "lambda_l2": (0.0, 1.0, 10.0),
}
_MAPPINGS = ("churn_params", "value_params", "search_space")
_TUPLES = ("tier_names", "tier_top_shares")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy (values that are lists become tuples, so a config read from JSON equals the original)."""
    return types.MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in mapping.items()})


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The choices of one training run (defaults: the values every released model was trained with).

    Frozen: derive a variant with :meth:`replace`. Round-trips through :meth:`to_dict` / :meth:`from_dict` and
    JSON (:meth:`to_json`, :meth:`read`).
    """

    horizon_days: int = 90
    """H: the churn label is "no purchase in the next H days" and the value label the net spend over them."""
    min_history_days: int = MIN_HISTORY_DAYS
    """Days of history (after the first transaction) a training cutoff needs; with none, a BTYD-only version."""
    cutoff_step_days: int = CUTOFF_STEP_DAYS
    """Days between two stacked training cutoffs."""
    max_cutoffs: int = MAX_CUTOFFS
    """The latest this many labeled cutoffs are stacked into the training rows."""
    level_source: str = "auto"
    """Requested level estimator (``--level-source``): ``auto`` chooses by backtest (see :mod:`training.level`)."""
    level_backtest_cutoffs: int = 3
    """How many of the latest labeled cutoffs the level and churn-rate estimators are backtested on."""
    level_rebase_above: float = 0.10
    """``btyd_rebased`` (when it cannot be backtested) wins over estimators that all missed by more than this
    relative error (0.10: 10%)."""
    seasonal_within: float = 0.10
    """Last year's season wins whenever it backtests within this relative error (0.10: |log ratio| <= log 1.1)."""
    churn_params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _frozen(_CHURN_PARAMS))
    """LightGBM parameters of the churn head (binary objective), before the search's overrides."""
    value_params: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _frozen(_VALUE_PARAMS))
    """LightGBM parameters of the value head (Tweedie, variance power 1.3), before the search's overrides."""
    search_space: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: _frozen(_SEARCH_SPACE))
    """Values the random search draws from (``tune`` > 1); the first parameter set is always the defaults."""
    tune: int = 1
    """Parameter sets tried per head and kind (1: the defaults only)."""
    max_rounds: int = 2000
    """Boosting rounds at most for a selection model (early stopping ends it sooner)."""
    early_stopping_rounds: int = 50
    """Rounds without improvement on the validation cutoff that stop a selection model."""
    tier_names: tuple[str, ...] = ("platinum", "gold", "silver", "bronze")
    """Value tiers, best first."""
    tier_top_shares: tuple[float, ...] = (0.05, 0.20, 0.50)
    """Cumulative population shares at the top of each tier but the last (platinum = top 5%, gold = next 15%,
    silver = next 30%, bronze = the rest); one fewer than :attr:`tier_names`, strictly increasing in (0, 1)."""
    min_customers: int = 20
    """Fewer customers with a purchase by the as-of date than this: nothing can be fitted (exit 2)."""
    margin: float = 1.0
    """Gross margin: the share of revenue that is profit, in (0, 1]; scales every expected value."""
    discount_rate: float = 0.0
    """Annual discount rate in [0, 1) applied to expected values (mid-horizon)."""
    seed: int = 0
    """Random seed of LightGBM and of the parameter search."""
    num_threads: int = 0
    """LightGBM threads (0: all cores). Results do not depend on it (deterministic LightGBM)."""

    def __post_init__(self) -> None:
        for name in _MAPPINGS:
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name in _TUPLES:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check()

    def _check(self) -> None:
        """Refuse values no run can use (ContractError: one sentence, exit 2 from the CLI)."""
        if self.horizon_days < 1:
            raise ContractError(f"the horizon must be at least 1 day, got {self.horizon_days}")
        if self.min_history_days < 0:
            raise ContractError(f"--min-history-days must be at least 0, got {self.min_history_days}")
        if min(self.cutoff_step_days, self.max_cutoffs, self.level_backtest_cutoffs, self.tune) < 1:
            raise ContractError("the cutoff step, the number of cutoffs, backtest cutoffs and --tune must be >= 1")
        if len(self.tier_names) != len(self.tier_top_shares) + 1:
            raise ContractError(
                f"{len(self.tier_names)} tier names need {len(self.tier_names) - 1} top shares,"
                f" got {len(self.tier_top_shares)}"
            )
        shares = self.tier_top_shares
        if any(not 0 < s < 1 for s in shares) or any(a >= b for a, b in itertools.pairwise(shares)):
            raise ContractError(f"tier top shares must increase strictly inside (0, 1), got {list(shares)}")
        if not 0 < self.margin <= 1:
            raise ContractError(f"--margin must be in (0, 1], got {self.margin}")
        if not 0 <= self.discount_rate < 1:
            raise ContractError(f"--discount-rate must be in [0, 1), got {self.discount_rate}")

    def __reduce__(self):
        # read-only mappings do not pickle; the plain dict does (Spark and multiprocessing pickle arguments)
        return (type(self).from_dict, (self.to_dict(),))

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` (field names) applied; a ``None`` value keeps the current one."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values: mappings become dicts, tuples lists."""

        def plain(value: Any) -> Any:
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, tuple | list):
                return [plain(v) for v in value]
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        """The config :meth:`to_dict` wrote (missing fields take their defaults; unknown ones are refused)."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ContractError(f"unknown training config field(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def read(cls, path: str | Path) -> TrainingConfig:
        """A config from a JSON file (e.g. ``training_config.json`` downloaded from a training run)."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ContractError(f"cannot read the training config {path}: {exc}") from None
        if not isinstance(values, dict):
            raise ContractError(f"the training config {path} must be a JSON object")
        return cls.from_dict(values)

    def flat_params(self, prefix: str = "config.") -> dict[str, Any]:
        """One MLflow param per value: ``config.horizon_days``, ``config.churn_params.num_leaves``, ... (lists as
        comma-separated text)."""
        out: dict[str, Any] = {}
        for name, value in self.to_dict().items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for key, item in items:
                text = ",".join(map(str, item)) if isinstance(item, list) else item
                out[f"{prefix}{name}{'.' + key if key else ''}"] = text
        return out


DEFAULT_CONFIG = TrainingConfig()
"""Today's choices: what ``retention train`` uses without flags."""


def training_config(config: TrainingConfig | None = None, **changes: Any) -> TrainingConfig:
    """``config`` (default: :class:`TrainingConfig`'s defaults) with ``changes`` applied, ``None`` values ignored.

    Lets callers that name a few choices (``fit_pipeline(prep, as_of, 90, seed=0)``) and callers that pass a whole
    config share one path.
    """
    return (config or DEFAULT_CONFIG).replace(**changes)
