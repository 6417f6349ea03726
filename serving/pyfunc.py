"""The MLflow ``pyfunc`` face of a scoring bundle, so generic MLflow tools (``mlflow models serve``,
``mlflow.pyfunc.spark_udf``) can score it. The service and the batch job load the bundle directly.

Input: a DataFrame with the bundle's feature columns (and optionally ``customer_id``); output: one row per input
row, in input order, with the nightly list's columns (:func:`serving.scoring.output_columns`): ``customer_id``
(when given), ``churn_probability``, ``expected_value``, ``value_at_risk``, ``expected_profit`` (under the economics
of ``RETENTION_ECONOMICS`` when set where the model is loaded, :mod:`serving.economics`; else equal to the expected
value), ``tier``, ``segment``, the optional columns (:data:`serving.scoring.OPTIONAL_FIELDS`: value quantiles and 80%
intervals, purchase-day intervals, timing, uplift, the scorecard's scores; NaN for a bundle without them),
``scorecard_tier``, ``reason_1..3`` (fact, cause family and effect) and ``churn_cause``. Scored by
:func:`serving.scoring.score_customers`, like every other path (scorecard weights: ``RETENTION_SCORECARD_WEIGHTS``
when set, else 1/3 each).

Logged from code (:data:`MODEL_CODE`, MLflow's models-from-code): the logged model holds that file, the bundle
artifact and MLmodel, and no ``python_model.pkl``; loading runs the file instead of unpickling anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from serving.economics import Economics, economics_of_settings
from serving.loader import BUNDLE_ARTIFACT
from serving.model import ScoringModel
from serving.scorecard import ScorecardWeights, weights_of_settings
from serving.scoring import output_columns, score_customers

MODEL_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
"""The models-from-code file passed to ``mlflow.pyfunc.log_model(python_model=...)``."""


class RetentionPyfunc(mlflow.pyfunc.PythonModel):
    economics: Economics | None = None
    """Set from the settings at load (``RETENTION_ECONOMICS``); None (a model set up by hand): the default."""

    scorecard_weights: ScorecardWeights | None = None
    """Set from the settings at load (``RETENTION_SCORECARD_WEIGHTS``); None: 1/3 each."""

    def load_context(self, context: Any) -> None:
        self.model = ScoringModel.load(context.artifacts[BUNDLE_ARTIFACT])
        self.economics = economics_of_settings()
        self.scorecard_weights = weights_of_settings()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        columns = list(self.model.feature_columns)
        X = model_input[columns].to_numpy(dtype=np.float64)
        ids = model_input["customer_id"] if "customer_id" in model_input.columns else np.arange(len(X)).astype(str)
        scored = score_customers(
            self.model, np.asarray(ids, dtype=object), X, economics=self.economics,
            scorecard_weights=self.scorecard_weights,
        )  # fmt: skip
        table = output_columns(scored)
        return table.drop(columns=["customer_id"]) if "customer_id" not in model_input.columns else table
