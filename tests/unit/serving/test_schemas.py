"""serving.schemas: the response schema declares each optional output once, by hand (a reader sees every field
and its units), so this test ties the declarations to the scoring core's lists instead of generating them."""

from __future__ import annotations

from serving.schemas import Prediction
from serving.scoring import INTERVAL_FIELDS, OPTIONAL_FIELDS, SCORECARD_FIELDS, TIMING_FIELDS
from serving.timing import TIMING_DAYS


def test_prediction_declares_the_scorers_optional_outputs_in_its_order_all_nullable() -> None:
    names = list(Prediction.model_fields)
    start = names.index("segment") + 1
    assert names[start : start + len(OPTIONAL_FIELDS)] == list(OPTIONAL_FIELDS)  # JSON key order of json_rows
    assert [f"purchase_within_{d}d" for d in TIMING_DAYS] == list(TIMING_FIELDS[:-1])
    for name in OPTIONAL_FIELDS:
        field = Prediction.model_fields[name]
        assert type(None) in field.annotation.__args__, name  # null for a model version without them
        reason = (
            "no intervals"
            if name in INTERVAL_FIELDS
            else "no uplift heads"
            if name == "uplift"
            else "no scorecard reference"
            if name in SCORECARD_FIELDS
            else "no BG/NBD"
        )
        assert reason in (field.description or ""), name
    assert names[start + len(OPTIONAL_FIELDS)] == "scorecard_tier"
