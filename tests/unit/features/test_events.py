"""features.events: the event contract on hand-made rows (every row valid or counted under the first rule it breaks),
type and value parsing, ids kept as text, strict mode, column mapping and reading files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import ContractError
from features.events import EVENT_COLUMNS, EVENT_RULES, KNOWN_EVENT_TYPES, prepare_events, read_events

# (customer_id, timestamp, type, value, reason) -> the rule the row breaks ("" = valid)
ROWS = [
    ("00042", "2024-03-01T23:30:00-02:00", " Complaint ", None, "late delivery", ""),
    ("00042", "2024-03-02", "complaint-resolved", "", None, ""),
    ("7", "2024-03-02", "Rating", "4", None, ""),
    ("7", "2024-03-03", "rating", " 2.5 ", None, ""),
    ("7", "2024-03-04", "NPS", "9", None, ""),  # an unknown type: kept, counted
    (None, "2024-03-02", "rating", "4", None, "null_customer_id"),
    ("  ", "garbage", "", "x", None, "null_customer_id"),  # the first rule wins
    ("8", "not a date", "rating", "4", None, "bad_timestamp"),
    ("8", "2024-03-02", "  ", "4", None, "null_type"),
    ("8", "2024-03-02", None, "4", None, "null_type"),
    ("8", "2024-03-02", "rating", "abc", None, "bad_value"),
    ("8", "2024-03-02", "rating", "inf", None, "bad_value"),
    ("00042", "2024-03-01T23:30:00-02:00", "complaint", None, "late delivery", ""),  # a repeat is a second event
]


def raw_rows(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "reason": [r[4] for r in rows],
        }
    )


def test_every_row_is_valid_or_counted_under_its_first_rule() -> None:
    events, report = prepare_events(raw_rows())
    expected = {rule: sum(1 for r in ROWS if r[5] == rule) for rule in EVENT_RULES}
    assert report.rule_counts == expected == {"null_customer_id": 2, "bad_timestamp": 1, "null_type": 2, "bad_value": 2}
    assert report.rows_read == len(ROWS) == report.rows_valid + report.rows_broken
    assert report.rows_valid == len(events) == 6
    assert list(events.columns) == list(EVENT_COLUMNS)


def test_values_are_parsed_as_the_contract_says() -> None:
    events, report = prepare_events(raw_rows())
    assert events["customer_id"].tolist() == ["00042", "00042", "7", "7", "7", "00042"]  # zeros kept
    assert events["type"].tolist() == ["complaint", "complaint_resolved", "rating", "rating", "nps", "complaint"]
    assert events["timestamp"].iloc[0] == pd.Timestamp("2024-03-02T01:30:00Z")  # -02:00 to UTC: the next day
    np.testing.assert_array_equal(events["value"].to_numpy(), [np.nan, np.nan, 4.0, 2.5, 9.0, np.nan])
    assert events["reason"].tolist() == ["late delivery", "", "", "", "", "late delivery"]
    assert report.types == {"complaint": 2, "complaint_resolved": 1, "nps": 1, "rating": 2}
    assert report.unknown_types == ["nps"]
    assert report.customers == 2
    assert (report.first_date, report.last_date) == ("2024-03-02", "2024-03-04")
    assert any("'nps'" in w for w in report.warnings)


def test_strict_names_the_rules() -> None:
    with pytest.raises(ContractError, match="2 null customer id, 1 bad timestamp, 2 null type, 2 bad value"):
        prepare_events(raw_rows(), strict=True)
    clean = [r for r in ROWS if not r[5]]
    events, _ = prepare_events(raw_rows(clean), strict=True)
    assert len(events) == len(clean)


def test_no_valid_row_is_refused_unless_allowed() -> None:
    broken = [r for r in ROWS if r[5]]
    with pytest.raises(ContractError, match="no valid event in the input"):
        prepare_events(raw_rows(broken))
    events, report = prepare_events(raw_rows(broken), allow_empty=True)
    assert len(events) == 0 and report.rows_broken == len(broken) and report.first_date is None


def test_ratings_without_a_value_are_reported() -> None:
    _, report = prepare_events(raw_rows([("1", "2024-01-01", "rating", "", None, "")]))
    assert report.ratings_without_value == 1
    assert report.warnings == ["1 rating events have no value: they carry no score"]


def test_columns_are_mapped_and_checked() -> None:
    raw = raw_rows().rename(columns={"type": "event", "value": "score"})
    events, _ = prepare_events(raw, {"type": "event", "value": "score"})
    assert events["type"].iloc[2] == "rating" and events["value"].iloc[2] == 4.0
    with pytest.raises(ContractError, match="required event column 'type' is missing"):
        prepare_events(raw)
    with pytest.raises(ContractError, match="unknown column 'amount'"):
        prepare_events(raw, {"amount": "score"})
    with pytest.raises(ContractError, match="'nope'"):
        prepare_events(raw, {"type": "nope"})


def test_float_ids_are_text_and_normalised_on_request() -> None:
    raw = pd.DataFrame({"customer_id": [17850.0, 12.0], "timestamp": ["2024-01-01"] * 2, "type": ["rating"] * 2})
    events, report = prepare_events(raw)
    assert events["customer_id"].tolist() == ["17850.0", "12.0"] and report.float_like_ids == 2
    events, report = prepare_events(raw, normalize_float_ids=True)
    assert events["customer_id"].tolist() == ["17850", "12"] and report.float_like_ids == 0


def test_a_numeric_value_column_and_no_value_column() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "timestamp": ["2024-01-01"] * 3,
            "type": ["rating"] * 3,
            "value": [5, np.nan, np.inf],
        }
    )
    events, report = prepare_events(raw)
    assert report.rule_counts["bad_value"] == 1
    np.testing.assert_array_equal(events["value"].to_numpy(), [5.0, np.nan])
    events, _ = prepare_events(raw.drop(columns="value"))
    assert events["value"].isna().all() and (events["reason"] == "").all()


def test_read_events_keeps_ids_as_text(tmp_path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("cust,at,event,score\n00042,2024-01-01,Complaint,\n00042,2024-01-02,rating,4\n")
    events, report = read_events(path, {"customer_id": "cust", "timestamp": "at", "type": "event", "value": "score"})
    assert events["customer_id"].tolist() == ["00042", "00042"]
    assert events["type"].tolist() == ["complaint", "rating"]
    assert report.rows_valid == 2 and "Event log quality" in report.render()
    assert set(KNOWN_EVENT_TYPES) >= set(report.types)
