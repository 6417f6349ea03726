"""serving.causes: every kernel feature has a documented churn-cause family, facts are plain language from the value,
and the batch summary attributes each customer's value at risk to the family of their largest risk-raising reason."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.kernel import FEATURE_DESCRIPTIONS
from serving.batch import UNEXPLAINED, JobSummary, at_risk_by_cause, summary_causes
from serving.causes import (
    EVENT_FEATURE_FAMILY,
    FAMILIES,
    FEATURE_FAMILY,
    NO_CAUSE,
    OTHER,
    fact,
    family_of,
    family_text,
)
from serving.scoring import ScoredBatch, churn_causes, reason_objects, reason_text, reason_text_columns


def test_every_kernel_feature_has_a_documented_family() -> None:
    named = set(FEATURE_FAMILY) | set(EVENT_FEATURE_FAMILY)  # named, not guessed from the name
    assert set(FEATURE_DESCRIPTIONS) <= named
    assert set(FEATURE_FAMILY.values()) | set(EVENT_FEATURE_FAMILY.values()) == set(FAMILIES)
    for feature in named:
        assert family_of(feature) in FAMILIES, feature


def test_families_follow_the_documented_split() -> None:
    assert family_of("refund_share") == "service" and family_of("unresolved_complaints") == "service"
    assert family_of("recency_days") == "engagement" and family_of("unsubscribed") == "engagement"
    assert family_of("trend_spend_90_365") == "value" and family_of("tenure_days") == "lapse"
    # a feature named nowhere: by its name, else other
    assert family_of("returns_90d") == "service" and family_of("email_clicks_30d") == "engagement"
    assert family_of("weather_index") == OTHER
    assert family_text("engagement") == "engagement fading" and family_text("mystery") == "mystery"


@pytest.mark.parametrize(
    ("feature", "value", "expected"),
    [
        ("unresolved_complaints", 2.0, "2 unresolved complaints"),
        ("complaints_30d", 1.0, "1 complaint in the last 30 days"),
        ("recency_days", 143.0, "no purchase for 143 days"),
        ("recency_days", math.nan, "no purchase yet"),
        ("recency_days", 0.0, "bought on the as-of day"),
        ("trend_tx_90_365", 0.0, "no purchase in the last 90 days (some earlier in the year)"),
        ("trend_spend_90_365", 0.42, "spending at 0.4x the yearly rate in the last 90 days"),
        ("overdue_ratio", 2.14, "no purchase for 2.1x the usual interval"),
        ("days_overdue", -4.0, "next purchase due in 4 days"),
        ("tx_30d", 1.0, "1 purchase in the last 30 days"),
        ("spend_90d", 1234.5, "net spend 1,234.50 in the last 90 days"),
        ("refund_share", 0.125, "12% of spend refunded"),
        ("n_categories", 1.0, "bought in 1 category"),
        ("days_to_second_purchase", math.nan, "one-time buyer: no second purchase day yet"),
        ("mean_rating", 3.25, "average rating 3.2"),
        ("mean_rating", math.nan, "never rated"),
        ("email_opens_90d", 1.0, "1 e-mail opened in the last 90 days"),
        ("days_since_last_complaint", 12.0, "last complaint 12 days ago"),
        ("unsubscribed", 1.0, "unsubscribed from emails"),
        ("season_cos", 0.3, "the time of year"),
        ("btyd_T", math.nan, "days between first purchase and cutoff (BTYD age T): missing"),
        ("loyalty_points", 12.5, "loyalty_points: 12.5"),
    ],
)
def test_facts_are_plain_language_from_the_value(feature: str, value: float, expected: str) -> None:
    assert fact(feature, value) == expected


def batch_with(contributions: list[list[float]], count: list[int]) -> ScoredBatch:
    """Three customers on features (recency: engagement, refund share: service, tenure: lapse)."""
    n = len(count)
    return ScoredBatch(
        customer_id=np.array([f"c{i}" for i in range(n)], dtype=object),
        churn_probability=np.full(n, 0.5),
        expected_value=np.full(n, 10.0),
        value_at_risk=np.full(n, 5.0),
        expected_profit=np.full(n, 10.0),
        tier=np.full(n, "gold", dtype=object),
        segment=np.full(n, "star", dtype=object),
        reason_feature=np.array([[1, 0, 2]] * n),
        reason_value=np.array([[0.25, 143.0, 400.0]] * n),
        reason_contribution=np.array(contributions),
        reason_count=np.array(count),
        feature_names=("recency_days", "refund_share", "tenure_days"),
        feature_descriptions=("days since last purchase", "refunded share", "tenure"),
    )


def test_reasons_say_their_family_and_fact_in_json_and_text_alike() -> None:
    batch = batch_with([[-0.5, 0.3, 0.1], [0.4, 0.2, 0.0], [-0.2, -0.1, 0.0]], [3, 2, 2])
    first = reason_objects(batch, 0)
    assert [(r["cause"], r["fact"]) for r in first] == [
        ("service", "25% of spend refunded"),
        ("engagement", "no purchase for 143 days"),
        ("lapse", "customer for 400 days"),
    ]
    text = reason_text_columns(batch)
    assert text["reason_1"][0] == "25% of spend refunded — service dissatisfaction (lowers churn risk)"
    assert text["reason_2"][0] == "no purchase for 143 days — engagement fading (raises churn risk)"
    # the cause of a customer: the family of the largest reason that raises churn risk
    assert churn_causes(batch).tolist() == ["engagement", "service", None]


def test_value_at_risk_by_cause_attributes_each_customer_whole() -> None:
    # hand-computed: engagement 10 + 30, service 20, none 5, unexplained 35 of 100
    cause = summary_causes(
        np.array(["engagement", "service", "engagement", None, None], dtype=object),
        np.array(["a", "b", "c", "d", None], dtype=object),
    )
    assert cause.tolist() == ["engagement", "service", "engagement", NO_CAUSE, UNEXPLAINED]
    entries = at_risk_by_cause(np.array([10.0, 20.0, 30.0, 5.0, 35.0]), cause)
    assert [(e["cause"], e["customers"], e["value_at_risk"]) for e in entries] == [
        ("service", 1, 20.0),
        ("value", 0, 0.0),
        ("engagement", 2, 40.0),
        ("lapse", 0, 0.0),
        (NO_CAUSE, 1, 5.0),
        (UNEXPLAINED, 1, 35.0),
    ]  # "other" only when some customer has it
    assert [e["share"] for e in entries] == [0.2, 0.0, 0.4, 0.0, 0.05, 0.35]
    summary = JobSummary.__new__(JobSummary)
    summary.population = {"at_risk_by_cause": entries}
    assert summary.render_causes() == (
        "value at risk by cause: engagement fading 40 (40%), service dissatisfaction 20 (20%),"
        " no reason raising risk 5 (5%), 1 customers scored without reasons"
    )


def test_the_report_shows_why_value_is_at_risk_largest_first() -> None:
    from serving.report import render_report

    cause = np.array(["engagement", "service", "engagement", NO_CAUSE, UNEXPLAINED], dtype=object)
    entries = at_risk_by_cause(np.array([10.0, 20.0, 30.0, 5.0, 35.0]), cause)
    page = render_report({"population": {"at_risk_by_cause": entries}}, title="t")
    section = page[page.index('<section id="causes">') :]
    section = section[: section.index("</section>")]
    assert "<h2>Why value is at risk</h2>" in section
    labels = [label for label in ("engagement fading", "service dissatisfaction", "no reason raising risk")]
    assert [section.index(f"<td>{label}</td>") for label in labels] == sorted(
        section.index(f"<td>{label}</td>") for label in labels
    )  # largest value at risk first
    assert "<td>40</td>" in section and "<td>40.0%</td>" in section
    assert "1 customer scored without reasons (35 value at risk, 35.0%)" in section
    older = render_report({"population": {}}, title="t")
    assert "no value at risk by cause" in older


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.integers(0, 2), min_size=3, max_size=3),
            st.lists(st.sampled_from([0.0, -0.0, math.nan, 1.0, 2.5, 143.0, -4.0]), min_size=3, max_size=3),
            st.lists(st.sampled_from([0.5, -0.25, 0.0]), min_size=3, max_size=3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_text_reasons_are_the_json_reasons_whatever_the_values(rows) -> None:
    """The column-wise texts (each distinct feature and value formatted once) equal the per-row JSON objects."""
    contributions = np.array([sorted(c, key=lambda v: -abs(v)) for _, _, c in rows])
    batch = batch_with(contributions.tolist(), np.count_nonzero(contributions, axis=1).tolist())
    batch = dataclasses.replace(
        batch,
        reason_feature=np.array([f for f, _, _ in rows]),
        reason_value=np.array([v for _, v, _ in rows]),
    )
    columns = reason_text_columns(batch)
    for i in range(len(rows)):
        objects = reason_objects(batch, i)
        for k in range(3):
            text = columns[f"reason_{k + 1}"][i]
            if k >= len(objects):
                assert pd.isna(text)
            else:
                o = objects[k]
                assert text == reason_text(o["fact"], o["cause"], o["effect"])
