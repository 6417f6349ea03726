"""features.campaigns: the campaign-log contract on hand-made rows (every row valid or counted under the first rule it
breaks), reading files, and point-in-time outcomes and features worked out by hand; Hypothesis checks that nothing
outside the outcome window changes an outcome and nothing after the cutoff changes a feature."""

from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.campaigns import (
    CAMPAIGN_COLUMNS,
    CAMPAIGN_RULES,
    TREATMENT_VALUES,
    campaign_outcomes,
    campaign_training_frame,
    prepare_campaigns,
    read_campaigns,
)
from features.contract import ContractError, prepare_transactions
from features.kernel import compute_features, index_transactions

# (customer_id, campaign_id, sent_at, treatment, cost) -> the rule the row breaks ("" = valid)
ROWS = [
    ("001", "K1", "2024-03-01T23:30:00-02:00", "Treatment", "1.5", ""),
    ("002", "K1", "2024-03-02", " control ", "", ""),  # empty cost: 0
    (None, "K1", "2024-03-02", "1", "1", "null_customer_id"),
    ("  ", "", "garbage", "x", "-1", "null_customer_id"),  # the first rule wins
    ("004", "", "2024-03-02", "1", "1", "null_campaign_id"),
    ("005", "K1", "not a date", "1", "1", "bad_timestamp"),
    ("006", "K1", "2024-03-02", "maybe", "1", "bad_treatment"),
    ("007", "K1", "2024-03-02", "2", "1", "bad_treatment"),
    ("008", "K1", "2024-03-02", "held_out", "-0.5", "bad_cost"),
    ("009", "K1", "2024-03-02", "yes", "abc", "bad_cost"),
    ("010", "K1", "2024-03-02", "no", "inf", "bad_cost"),
    ("001", "K1", "2024-03-02", "0", "1", "duplicate_assignment"),  # other arm: a conflicting duplicate
    ("002", "K1", "2024-03-09", "control", "1", "duplicate_assignment"),
    ("001", "K2", "2024-03-05", "contacted", "0", ""),  # same customer, another campaign
]


def raw_rows(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "campaign_id": [r[1] for r in rows],
            "sent_at": [r[2] for r in rows],
            "treatment": [r[3] for r in rows],
            "cost": [r[4] for r in rows],
        }
    )


def test_every_row_is_valid_or_counted_under_its_first_rule() -> None:
    campaigns, report = prepare_campaigns(raw_rows())
    expected = {rule: sum(r[5] == rule for r in ROWS) for rule in CAMPAIGN_RULES}
    assert report.rule_counts == expected
    assert report.rows_read == len(ROWS) == report.rows_valid + report.rows_broken
    assert report.rows_valid == 3 and report.conflicting_assignments == 1
    assert list(campaigns.columns) == list(CAMPAIGN_COLUMNS)
    assert campaigns["customer_id"].tolist() == ["001", "002", "001"]
    assert campaigns["campaign_id"].tolist() == ["K1", "K1", "K2"]
    assert campaigns["sent_at"].tolist() == [
        pd.Timestamp("2024-03-02T01:30:00Z"),  # -02:00 converted to UTC: the next day
        pd.Timestamp("2024-03-02T00:00:00Z"),
        pd.Timestamp("2024-03-05T00:00:00Z"),
    ]
    assert campaigns["treatment"].tolist() == [1, 0, 1] and campaigns["treatment"].dtype == np.int8
    assert campaigns["cost"].tolist() == [1.5, 0.0, 0.0]
    assert campaigns["offer"].tolist() == ["", "", ""]
    assert (report.treated, report.control, report.campaigns, report.customers) == (2, 1, 2, 2)
    assert report.arms == {"K1": {"treated": 1, "control": 1}, "K2": {"treated": 1, "control": 0}}
    assert (report.first_sent, report.last_sent) == ("2024-03-02", "2024-03-05")
    assert any("'K2' has no held-out control group" in w for w in report.warnings)
    assert any("other arm" in w for w in report.warnings)
    assert report.to_dict()["rows_broken"] == 11
    assert "duplicate assignment" in report.render()


def test_strict_names_the_broken_rules_and_a_clean_log_passes() -> None:
    with pytest.raises(ContractError, match=r"--strict: 2 null customer id, .*2 duplicate assignment row\(s\)"):
        prepare_campaigns(raw_rows(), strict=True)
    clean = [r for r in ROWS if r[5] == ""]
    campaigns, report = prepare_campaigns(raw_rows(clean), strict=True)
    assert len(campaigns) == 3 and report.rows_broken == 0


@pytest.mark.parametrize("value", sorted(TREATMENT_VALUES))
def test_every_accepted_treatment_flag(value: str) -> None:
    frame = raw_rows([("a", "K", "2024-01-01", f" {value.upper()} ", "", "")])
    campaigns, _ = prepare_campaigns(frame)
    assert campaigns["treatment"].tolist() == [TREATMENT_VALUES[value]]


def test_boolean_and_numeric_treatment_columns() -> None:
    base = {"customer_id": ["a", "b", "c"], "campaign_id": "K", "sent_at": "2024-01-01"}
    booleans, _ = prepare_campaigns(pd.DataFrame({**base, "treatment": [True, False, True]}))
    assert booleans["treatment"].tolist() == [1, 0, 1]
    numbers, report = prepare_campaigns(pd.DataFrame({**base, "treatment": [1.0, 0.0, 2.0]}))
    assert numbers["treatment"].tolist() == [1, 0] and report.rule_counts["bad_treatment"] == 1


def test_mapping_assigned_at_offer_and_missing_columns() -> None:
    raw = pd.DataFrame(
        {"cust": ["a", "b"], "camp": ["K", "K"], "when": ["2024-01-01", "2024-01-02"], "arm": ["1", "0"]}
    )
    mapping = {"customer_id": "cust", "campaign_id": "camp", "sent_at": "when", "treatment": "arm"}
    campaigns, _ = prepare_campaigns(raw, mapping)
    assert campaigns["customer_id"].tolist() == ["a", "b"] and campaigns["cost"].tolist() == [0.0, 0.0]
    alias = raw.rename(columns={"when": "assigned_at"}).assign(offer=["10% off", None])
    mapping.pop("sent_at")
    campaigns, _ = prepare_campaigns(alias, mapping)
    assert campaigns["sent_at"].dt.day.tolist() == [1, 2]
    assert campaigns["offer"].tolist() == ["10% off", ""]
    with pytest.raises(ContractError, match="unknown column 'amount'"):
        prepare_campaigns(raw, {"amount": "arm"})
    with pytest.raises(ContractError, match=r"'nope' .*does not have"):
        prepare_campaigns(raw, {"customer_id": "nope"})
    with pytest.raises(ContractError, match="required campaign column 'campaign_id', 'sent_at', 'treatment'"):
        prepare_campaigns(raw[["cust"]], {"customer_id": "cust"})
    with pytest.raises(ContractError, match=r"no valid campaign row .*2 bad treatment"):
        prepare_campaigns(raw.assign(arm=["?", "?"]), {**mapping, "sent_at": "when"})


def test_float_ids_stay_text_unless_normalised() -> None:
    raw = pd.DataFrame(
        {"customer_id": [17850.0, 42.0], "campaign_id": [7.0, 7.0], "sent_at": "2024-01-01", "treatment": [1, 0]}
    )
    campaigns, report = prepare_campaigns(raw)
    assert campaigns["customer_id"].tolist() == ["17850.0", "42.0"] and campaigns["campaign_id"].iloc[0] == "7.0"
    assert report.float_like_ids == 2 and any("--normalize-ids" in w for w in report.warnings)
    campaigns, report = prepare_campaigns(raw, normalize_float_ids=True)
    assert campaigns["customer_id"].tolist() == ["17850", "42"] and campaigns["campaign_id"].iloc[0] == "7"
    assert report.float_like_ids == 0


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".db"])
def test_read_campaigns_keeps_ids_as_text(tmp_path, suffix: str) -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["00042", "00043"],
            "campaign": ["007", "007"],
            "sent_at": ["2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"],
            "treatment": ["treatment", "control"],
            "offer": ["0010", "0010"],
            "cost": [2.5, 0.0],
        }
    )
    path = tmp_path / f"campaigns{suffix}"
    source = str(path)
    if suffix == ".csv":
        raw.to_csv(path, index=False)
    elif suffix == ".parquet":
        raw.to_parquet(path, index=False)
    else:  # a SQL table (text columns stay text)
        source = f"sqlite:///{path}?table=campaigns"
        with sqlite3.connect(path) as conn:
            raw.to_sql("campaigns", conn, index=False)
    campaigns, report = read_campaigns(source, {"campaign_id": "campaign"}, strict=True)
    assert campaigns["customer_id"].tolist() == ["00042", "00043"]
    assert campaigns["campaign_id"].tolist() == ["007", "007"] and campaigns["offer"].tolist() == ["0010", "0010"]
    assert campaigns["cost"].tolist() == [2.5, 0.0] and report.rows_valid == 2
    with pytest.raises(ContractError, match="does not exist"):
        read_campaigns(tmp_path / "missing.csv")


# Outcomes by hand. Horizon 5 days. Campaign K1 is sent 2024-03-01T23:30-02:00 = 2024-03-02T01:30Z (cutoff 03-02,
# window 03-03 .. 03-07) and on 2024-03-02 (same cutoff); K2 on 2024-03-05 (cutoff 03-05, window 03-06 .. 03-10).
TRANSACTIONS = [
    ("A", "2024-02-20T12:00:00Z", 10.0),
    ("A", "2024-03-02T22:00:00Z", 7.0),  # the K1 send day: a feature, not an outcome
    ("A", "2024-03-03T09:00:00Z", 20.0),  # K1 window, first day
    ("A", "2024-03-05T09:00:00Z", -5.0),  # K1 window (a refund); the K2 send day
    ("A", "2024-03-07T23:59:59Z", 3.0),  # K1 window, last day; K2 window
    ("A", "2024-03-08T00:00:00Z", 100.0),  # after the K1 window; K2 window
    ("A", "2024-03-11T00:00:00Z", 50.0),  # after the K2 window (the log's last day)
    ("B", "2024-01-15T12:00:00Z", 30.0),
    ("B", "2024-03-04T12:00:00Z", -30.0),  # only a refund in the K1 window: not retained, net spend -30
    ("L", "2024-03-04T12:00:00Z", 15.0),  # joins after the K1 send day: not known at its cutoff
]
CAMPAIGNS = [
    ("A", "K1", "2024-03-01T23:30:00-02:00", 1),
    ("B", "K1", "2024-03-02", 0),
    ("Z", "K1", "2024-03-02", 1),  # not in the transactions at all
    ("L", "K1", "2024-03-02", 0),
    ("A", "K2", "2024-03-05", 0),
]
# (cutoff, known, retained, net_spend) per campaign row
EXPECTED = [
    (dt.date(2024, 3, 2), True, 1, 18.0),  # 20 - 5 + 3
    (dt.date(2024, 3, 2), True, 0, -30.0),
    (dt.date(2024, 3, 2), False, 0, 0.0),
    (dt.date(2024, 3, 2), False, 0, 0.0),
    (dt.date(2024, 3, 5), True, 1, 103.0),  # 3 + 100
]


def transactions(rows=TRANSACTIONS) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    return prepare_transactions(frame)[0]


def campaigns(rows=CAMPAIGNS) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "campaign_id", "sent_at", "treatment"])
    return prepare_campaigns(frame, strict=True)[0]


def test_outcomes_by_hand() -> None:
    prep = index_transactions(transactions())
    out = campaign_outcomes(prep, campaigns(), 5)
    assert list(out.columns) == [*CAMPAIGN_COLUMNS, "cutoff", "known", "retained", "net_spend"]
    got = list(zip(out["cutoff"], out["known"], out["retained"], out["net_spend"], strict=True))
    assert got == EXPECTED
    assert out["retained"].dtype == np.int8 and out["known"].dtype == bool
    pd.testing.assert_frame_equal(out[list(CAMPAIGN_COLUMNS)], campaigns())


def test_sent_at_of_any_zone_and_resolution_is_its_utc_day() -> None:
    prep = index_transactions(transactions())
    log = campaigns()
    local = log.assign(sent_at=log["sent_at"].dt.tz_convert("America/Sao_Paulo").dt.as_unit("us"))  # UTC-3
    pd.testing.assert_frame_equal(
        campaign_outcomes(prep, local, 5).drop(columns="sent_at"),
        campaign_outcomes(prep, log, 5).drop(columns="sent_at"),
    )


def test_a_window_past_the_log_is_refused() -> None:
    prep = index_transactions(transactions())
    with pytest.raises(ContractError, match=r"sent on 2024-03-05 needs outcomes through 2024-03-12 .*2024-03-11"):
        campaign_outcomes(prep, campaigns(), 7)
    out = campaign_outcomes(prep, campaigns(), 7, as_of="2024-03-12")  # the caller vouches for a quiet last day
    assert out["net_spend"].tolist()[-1] == 153.0
    with pytest.raises(ContractError, match="horizon must be at least 1 day"):
        campaign_outcomes(prep, campaigns(), 0)


def test_training_frame_is_the_kernel_at_each_cutoff() -> None:
    tx = transactions()
    prep = index_transactions(tx)
    X, out = campaign_training_frame(prep, campaigns(), 5)
    assert list(X.columns) == prep.columns and len(X) == len(out) == 3  # Z and L are not known at the cutoff
    assert out["customer_id"].tolist() == ["A", "B", "A"] and out["campaign_id"].tolist() == ["K1", "K1", "K2"]
    for row, (customer, cutoff) in enumerate(zip(out["customer_id"], out["cutoff"], strict=True)):
        kernel = compute_features(tx, cutoff).set_index("customer_id").loc[customer, prep.columns]
        np.testing.assert_array_equal(X.iloc[row].to_numpy(), kernel.to_numpy(dtype=float))
    # by hand: A at 03-02 has bought twice (10 and 7, the send day included), at 03-05 also 20 and a refund of 5
    assert X["n_transactions"].tolist() == [2.0, 1.0, 3.0]
    assert X["recency_days"].tolist() == [0.0, 47.0, 2.0] and X["refund_count"].tolist() == [0.0, 0.0, 1.0]
    assert X["net_spend"].tolist() == [17.0, 30.0, 32.0]
    X_all, out_all = campaign_training_frame(prep, campaigns(), 5, known_only=False)
    assert len(X_all) == len(out_all) == len(CAMPAIGNS) and X_all.iloc[[2, 3]].isna().all().all()
    assert out_all["known"].tolist() == [True, True, False, False, True]


START = pd.Timestamp("2024-01-01", tz="UTC")
CUTOFF_DAY = 60  # 2024-03-01
HORIZON = 10
CUSTOMERS = ["a", "b", "c"]
event = st.tuples(
    st.sampled_from(CUSTOMERS),
    st.integers(min_value=0, max_value=24 * 100 - 1),  # hours after START
    st.one_of(st.floats(min_value=-40, max_value=300, allow_nan=False).map(lambda v: round(v, 2)), st.just(0.0)),
)
hours_in_day = st.integers(min_value=0, max_value=23)


def _frame(rows) -> pd.DataFrame:
    base = [(c, START + pd.Timedelta(days=k), 5.0) for k, c in enumerate(CUSTOMERS)]  # everyone known at the cutoff
    extra = [(c, START + pd.Timedelta(hours=h), a) for c, h, a in rows]
    return prepare_transactions(pd.DataFrame(base + extra, columns=["customer_id", "timestamp", "amount"]))[0]


def _log(hour: int) -> pd.DataFrame:
    sent = START + pd.Timedelta(days=CUTOFF_DAY, hours=hour)
    rows = [(c, "K", sent, k % 2) for k, c in enumerate([*CUSTOMERS, "zz"])]
    return prepare_campaigns(pd.DataFrame(rows, columns=["customer_id", "campaign_id", "sent_at", "treatment"]))[0]


def _outcomes(rows, hour: int) -> pd.DataFrame:
    as_of = (START + pd.Timedelta(days=CUTOFF_DAY + HORIZON)).date()
    return campaign_outcomes(index_transactions(_frame(rows)), _log(hour), HORIZON, as_of=as_of)


@settings(max_examples=60, deadline=None)
@given(st.lists(event, max_size=30), st.lists(event, max_size=30), hours_in_day)
def test_transactions_outside_the_window_never_change_an_outcome(rows, others, hour) -> None:
    first, end = (CUTOFF_DAY + 1) * 24, (CUTOFF_DAY + HORIZON + 1) * 24  # the hours of the days D+1 .. D+H
    outside = [r for r in others if not first <= r[1] < end]  # at or before the cutoff, or after D+H
    pd.testing.assert_frame_equal(_outcomes(rows, hour), _outcomes(rows + outside, hour))


@settings(max_examples=60, deadline=None)
@given(st.lists(event, max_size=30), st.lists(event, max_size=30), hours_in_day)
def test_transactions_after_the_cutoff_never_change_a_feature(rows, later, hour) -> None:
    before = [r for r in rows if r[1] < (CUTOFF_DAY + 1) * 24]
    # later transactions of the campaign's customers and of new ones
    after = [(c if k % 2 else f"new {c}", h, a) for k, (c, h, a) in enumerate(later) if h >= (CUTOFF_DAY + 1) * 24]
    as_of = (START + pd.Timedelta(days=CUTOFF_DAY + HORIZON)).date()
    frames = []
    for world in (before, before + after):
        prep = index_transactions(_frame(world))
        X, out = campaign_training_frame(prep, _log(hour), HORIZON, as_of=as_of, known_only=False)
        frames.append(X)
        assert out["known"].tolist() == [True, True, True, False]
    pd.testing.assert_frame_equal(frames[0], frames[1])
