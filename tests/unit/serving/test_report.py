"""serving.report and the MLflow records of serving.runs: the HTML run report from a hand-built summary that follows
the interfaces of issue 12 exactly (ten customers, figures computed by hand), its numbers, its escaping (names with
markup, ``$`` for matplotlib), sections a summary lacks or holds malformed, where it is written, and the
``report.html`` / ``plan.json`` artifacts of scoring and plan runs. The page in a real browser:
tests/integration/test_report_browser.py."""

from __future__ import annotations

import base64
import dataclasses
import re
import struct
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import RULES, ContractError, DataQualityReport
from serving.batch import JobSummary
from serving.drift import PSI_WARNING
from serving.report import (
    REPORT_SUFFIX,
    SECTION_HEADINGS,
    render_report,
    report_path_for,
    report_title,
    write_report,
    write_run_report,
)

# ten customers: expected value, expected profit (= value - 40), tier, segment
EV = np.array([500.0, 200, 100, 80, 50, 30, 20, 10, 5, 5])
PROFIT = EV - 40.0  # 460, 160, 60, 40, 10, -10, -20, -30, -35, -35: five unprofitable, together -130
TIER = ["gold"] * 2 + ["silver"] * 3 + ["bronze"] * 5
SEGMENT = ["star", "rising", "star", "fading", "low", "fading", "low", "low", "low", "fading"]
SHARES = np.linspace(0.0, 1.0, 101)


def _curve(values: np.ndarray) -> list[float]:
    """Cumulative sum of ``values`` (highest first) at the 101 customer shares, linear between customers."""
    cumulative = np.r_[0.0, np.cumsum(np.sort(values)[::-1])]
    return np.interp(SHARES, np.arange(len(values) + 1) / len(values), cumulative).tolist()


def population(
    tier_names: tuple[str, ...] = ("gold", "silver", "bronze"),
    segments: tuple[str, ...] = ("star", "rising", "fading", "low"),
) -> dict:
    """The ``population`` block of interfaces.md for the ten customers (tiers and segments renamable)."""
    rename = dict(zip(("gold", "silver", "bronze"), tier_names, strict=True))
    seg_names = dict(zip(("star", "rising", "fading", "low"), segments, strict=True))
    tier = np.array([rename[t] for t in TIER], dtype=object)
    segment = np.array([seg_names[s] for s in SEGMENT], dtype=object)
    return {
        "tiers": [
            {
                "tier": t,
                "customers": int((tier == t).sum()),
                "expected_value": float(EV[tier == t].sum()),
                "expected_profit": float(PROFIT[tier == t].sum()),
                "value_at_risk": float(0.5 * EV[tier == t].sum()),
            }
            for t in tier_names
        ],
        "matrix": [
            {"tier": t, "segment": s, "customers": int(cell.sum()), "expected_value": float(EV[cell].sum())}
            for t in tier_names
            for s, cell in ((s, (tier == t) & (segment == s)) for s in seg_names.values())
        ],
        "pareto": {"customer_share": SHARES.tolist(), "value_share": (np.array(_curve(EV)) / EV.sum()).tolist()},
        "profit_curve": {"customer_share": SHARES.tolist(), "cumulative_profit": _curve(PROFIT)},
        "unprofitable": {"customers": int((PROFIT < 0).sum()), "expected_profit": float(PROFIT[PROFIT < 0].sum())},
    }


def summary_dict(**changes) -> dict:
    """A scoring run summary (``JobSummary.to_dict()`` keys) with the ten customers' population."""
    base = {
        "output": "out/list.parquet",
        "model_version": "7",
        "as_of": "2024-12-30",
        "customers_scored": 10,
        "rows_written": 10,
        "report": {"rows_read": 1_250, "rows_valid": 1_234, "rows_broken": 16},
        "top20_value_share": 0.7,
        "horizon_days": 90,
        "equity": 1_000.0,
        "equity_low": 850.0,
        "equity_high": 1_200.0,
        "tier_counts": {"gold": 2, "silver": 3, "bronze": 5},
        "psi": {"recency_days": 0.41, "spend_365d": 0.12, "n_purchase_days": 0.0},
        "drift_warnings": [f"recency_days PSI 0.41 > {PSI_WARNING}"],
        "partitions": 1,
        "resumed_partitions": 0,
        "seconds": 1.5,
        "input_warnings": [],
        "population": population(),
    }
    return {**base, **changes}


PLAN = {
    "totals": {
        "budget": 100.0,
        "customers_scored": 10,
        "candidates": 4,
        "customers_contacted": 3,
        "spend": 90.0,
        "expected_saved_value": 270.0,
        "expected_net_benefit": 180.0,
        "roi": 2.0,
        "sleeping_dogs": 1,
        "uplift_source": "model",
    },
    "budget_curve": {
        "spend": [0.0, 30.0, 60.0, 90.0],
        "expected_saved_value": [0.0, 150.0, 230.0, 270.0],
        "expected_net_benefit": [0.0, 120.0, 170.0, 180.0],
    },
    "offers": {"call": 2, "voucher": 1},
}


class Page(HTMLParser):
    """What a parser sees of a page: start tags with attributes, the text of each element, the script bodies."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._open: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag):
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):
        (self.scripts if self._open and self._open[-1] == "script" else self.text).append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]

    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def png_size(src: str) -> tuple[int, int]:
    """Width and height of an inline PNG data URI (from its IHDR chunk)."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    data = base64.b64decode(src[len(prefix) :], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def page() -> tuple[str, Page]:
    text = render_report(summary_dict(), plan=PLAN, title="Retention plan, as of 2024-12-30")
    return text, Page(text)


def test_every_section_has_its_heading_and_the_charts_are_inline_pngs(page) -> None:
    text, parsed = page
    headings = [Page(h).words() for h in re.findall(r"<h2>(.*?)</h2>", text)]
    assert headings == list(SECTION_HEADINGS.values())  # the plan first, then every score section
    images = parsed.all("img")
    assert len(images) == 3  # pyramid, Pareto + profit, budget curve
    for img in images:
        width, height = png_size(img["src"])
        assert width > 300 and height > 200 and img["alt"]


def test_nothing_is_fetched_the_policy_forbids_it_and_the_only_script_is_the_checked_one(page) -> None:
    text, parsed = page
    assert not re.search(r"(https?|ftp|wss?)://", text)  # no URL at all, so nothing to fetch
    policy = next(a["content"] for a in parsed.all("meta") if a.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none'; img-src data:;") and "script-src 'sha256-" in policy
    assert len(parsed.all("script")) == 1 and len(parsed.scripts) == 1
    digest = base64.b64encode(__import__("hashlib").sha256(parsed.scripts[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy  # the browser runs this script and no other
    assert not any(a.get("src") or a.get("href") for _, a in parsed.tags if _ in ("script", "link", "iframe"))


def test_the_header_and_tables_hold_the_hand_computed_numbers(page) -> None:
    words = page[1].words()
    for expected in (
        "As of 2024-12-30",
        "Model version 7",
        "Horizon 90 days",
        "Customers scored 10",
        "Customer equity 1,000 (80% interval 850–1.2k)",
        "Top 20% hold 70.0% of expected value",
        "Rows valid 1,234 of 1,250",
        "Plan 3 customers, spend 90",
        f"drift: recency_days PSI 0.41 > {PSI_WARNING}",
        # tier, customers, share, expected value, share, expected profit, value at risk
        "gold 2 20.0% 700 70.0% 620 350",
        "silver 3 30.0% 230 23.0% 110 115",
        "bronze 5 50.0% 70 7.0% -130 35",
        "5 customers (50.0% of the customers scored) are unprofitable: their expected profit sums to -130",
        # profit 600 in all; the top two make 620; the last three (-30, -35, -35) take away 100
        "most profitable 20% of customers make 103.3% of the total expected profit (600); "
        "the least profitable 30% add -100 (-16.7% of the total)",
        "1 of 3 features above the warning threshold PSI 0.25 (highlighted); 1 with a moderate shift",
        "recency_days 0.410 major shift",
        "spend_365d 0.120 moderate shift",
        "1 stable feature (PSI below 0.1) feature PSI",  # folded away in a <details>
        "n_purchase_days 0.000 stable",
        "Budget 100",
        "Customers contacted 3",
        "Spend 90",
        "Expected saved value 270",
        "Expected net benefit 180",
        "ROI (expected net benefit / spend) 2.00",
        "Sleeping dogs (negative uplift, never contacted) 1",
        "Uplift from the uplift model",
        "call 2 voucher 1",
    ):
        assert expected in words, expected


def test_the_matrix_has_every_tier_and_segment_with_its_customers_and_value(page) -> None:
    text = page[0]
    matrix = text[text.index('id="matrix"') : text.index('id="drift"')]
    rows = re.findall(r"<tr>(.*?)</tr>", matrix)
    assert "star" in rows[0] and "low" in rows[0]
    cells = [Page(r).words() for r in rows[1:]]
    assert cells[0] == "gold 1 customer value 500 1 customer value 200 0 customers value 0 0 customers value 0"
    assert cells[2] == "bronze 0 customers value 0 0 customers value 0 2 customers value 35 3 customers value 35"
    # the heat: the darkest cell is the one with the most expected value (500), an empty one the lightest
    alphas = [float(a) for a in re.findall(r"rgba\(35,57,93,([0-9.]+)\)", matrix)]
    assert max(alphas) == alphas[0] == 0.86 and min(alphas) == 0.06


def test_markup_in_names_and_titles_is_text_never_markup() -> None:
    evil_tier, evil_segment = '<script>alert("t")</script>', '"><img src=x onerror=alert(1)>'
    evil_feature = "</td><script>x</script>$a"
    summary = summary_dict(
        population=population(("$\\nocommand{x}$", evil_tier, "bronze & co"), ("star", evil_segment, "fading", "low")),
        psi={evil_feature: 0.5},
        drift_warnings=[f"{evil_feature} PSI 0.50 > 0.25"],
        output="a&b<c>.parquet",
        model_version="<i>7</i>",
    )
    text = render_report(summary, plan={**PLAN, "offers": {"<b>call</b>": 3}}, title="<b>T</b> & co")
    parsed = Page(text)
    assert len(parsed.all("script")) == 1 and len(parsed.all("img")) == 3  # no injected script or image
    assert not [a for a in parsed.all("img") if "onerror" in a]
    assert not parsed.all("b") and not parsed.all("i")
    words = parsed.words()
    for name in (
        evil_tier,
        evil_segment,
        evil_feature,
        "$\\nocommand{x}$",
        "bronze & co",
        "a&b<c>.parquet",
        "<b>call</b>",
    ):
        assert name in words, name
    assert "<title>&lt;b&gt;T&lt;/b&gt; &amp; co</title>" in text
    assert "could not be drawn" not in text  # "$...$" is no mathtext in the pyramid: drawn as the text it is


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=2, unique=True))
def test_any_feature_and_segment_name_comes_back_as_the_same_text(names) -> None:
    feature, segment = names
    cells = [{"tier": "gold", "segment": segment, "customers": 1, "expected_value": 2.0}]
    summary = {"psi": {feature: 0.3}, "population": {"matrix": cells}}
    parsed = Page(render_report(summary, title=feature))
    assert len(parsed.all("script")) == 1
    rows = [" ".join(r.split()) for r in parsed.text]
    assert " ".join(feature.split()) in rows or not feature.split()
    assert " ".join(segment.split()) in rows or not segment.split()


def test_a_summary_without_population_or_drift_says_so_in_each_section() -> None:
    older = summary_dict(psi={}, drift_warnings=[])
    del older["population"]
    parsed = Page(render_report(older, title="old"))
    words = parsed.words()
    assert [h for h in SECTION_HEADINGS.values() if h in words] == list(SECTION_HEADINGS.values())[1:]
    assert words.count("has no population block") == 3  # pyramid, concentration, matrix
    assert "Customers per tier: tier customers gold 2 silver 3 bronze 5" in words  # what an older summary has
    assert "No drift figures" in words and not parsed.all("img")
    bare = Page(render_report({}, title="empty")).words()
    assert "As of n/a" in bare and "Customer equity n/a (no interval)" in bare


def test_a_malformed_block_fails_its_section_only() -> None:
    broken = summary_dict()
    broken["population"] = {**broken["population"], "pareto": {"customer_share": [0.0, 1.0], "value_share": [0.0]}}
    parsed = Page(render_report(broken, title="broken"))
    words = parsed.words()
    assert words.count("could not be drawn") == 1 and "Value concentration and profit This section could" in words
    assert len(parsed.all("img")) == 1  # the pyramid still drawn
    assert "recency_days 0.410 major shift" in words


def test_a_plan_that_contacts_nobody_has_no_curve_and_no_roi() -> None:
    empty = {
        "totals": {**PLAN["totals"], "customers_contacted": 0, "spend": 0.0, "roi": None},
        "budget_curve": {"spend": [], "expected_saved_value": [], "expected_net_benefit": []},
        "offers": {"call": 0},
    }
    words = Page(render_report({}, plan=empty, title="p")).words()
    assert "ROI (expected net benefit / spend) n/a" in words and "contacts nobody" in words


def test_report_title() -> None:
    assert report_title(summary_dict()) == "Retention scores, as of 2024-12-30, model version 7"
    assert report_title({"as_of": "2024-12-30"}, plan=PLAN) == "Retention plan, as of 2024-12-30"


def test_report_path_beside_a_file_and_in_the_work_folder_for_a_database(tmp_path, monkeypatch) -> None:
    assert report_path_for("out/list.parquet") == Path("out/list.report.html")
    assert report_path_for("/data/list.csv") == Path("/data/list.report.html")
    assert report_path_for("out/parts") == Path("out/parts.report.html")  # a Parquet folder
    assert report_path_for("") is None
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "home"))
    url = "postgresql://me:secret@db/crm?table=churn list"
    path = report_path_for(url)
    assert path is not None and path.parent == tmp_path / "home" / "reports"
    assert re.fullmatch(r"churn_list-[0-9a-f]{12}" + re.escape(REPORT_SUFFIX), path.name)
    assert "secret" not in str(path)
    other = report_path_for(url.replace("@db/", "@db2/"))
    assert other is not None and other != path and other.name.startswith("churn_list-")
    assert report_path_for("sqlite:///x.db").name.startswith("retention_scores-")  # the default table


def test_write_report_replaces_the_file_atomically_and_says_why_it_cannot(tmp_path) -> None:
    target = tmp_path / "new" / "list.report.html"
    assert write_report("<p>one</p>", target) == target
    write_report("<p>two</p>", target)
    assert target.read_text() == "<p>two</p>" and sorted(p.name for p in target.parent.iterdir()) == [target.name]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ContractError, match="cannot write the report"):
        write_report("<p/>", tmp_path / "file" / "r.html")


def test_a_run_report_is_written_beside_the_output_and_names_it(tmp_path) -> None:
    out = tmp_path / "plans" / "plan.parquet"
    html, path = write_run_report(summary_dict(output="/tmp/.plan-scores-x/scores.parquet"), str(out), plan=PLAN)
    assert path == tmp_path / "plans" / "plan.report.html" and path.read_text() == html
    words = Page(html).words()
    assert f"output {out}" in words and "scores.parquet" not in words
    assert "Retention plan, as of 2024-12-30, model version 7" in words


# --- MLflow ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Iterator[str]:
    """One local MLflow store (SQLite) for the module's records: created once, its schema set up once."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(folder)  # artifacts under the folder
        mlflow.set_tracking_uri(uri)
        mlflow.search_experiments()  # the store's schema, created here
        yield uri
    mlflow.set_tracking_uri(None)


def job_summary(**changes) -> JobSummary:
    data = summary_dict()
    quality = DataQualityReport(
        rows_read=1_250, rows_valid=1_234, rule_counts=dict.fromkeys(RULES, 0), customers=10, purchases=1_234,
        refunds=0, zero_amount=0, refund_share=0.0, first_date="2023-01-02", last_date="2024-12-29",
        as_of="2024-12-30",
    )  # fmt: skip
    fields = {f.name for f in dataclasses.fields(JobSummary)}
    return JobSummary(**{**{k: v for k, v in data.items() if k in fields}, "report": quality, **changes})


def artifact_text(uri: str, run_id: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    return Path(MlflowClient(tracking_uri=uri).download_artifacts(run_id, name)).read_text()


def test_scoring_runs_log_the_report_when_the_summary_has_a_population(tracking) -> None:
    from mlflow.tracking import MlflowClient

    from serving.runs import REPORT_ARTIFACT, record_run

    run_id = record_run(job_summary(), source="tx.parquet", model="models:/retention@champion", engine="local")
    html = artifact_text(tracking, run_id, REPORT_ARTIFACT)
    assert html.startswith("<!DOCTYPE html>") and "Retention scores, as of 2024-12-30, model version 7" in html
    metrics = MlflowClient(tracking_uri=tracking).get_run(run_id).data.metrics
    assert metrics["unprofitable_customers"] == 5 and metrics["unprofitable_expected_profit"] == -130
    given = record_run(job_summary(), source="tx", model="m", engine="local", report_html="<p>given</p>")
    assert artifact_text(tracking, given, REPORT_ARTIFACT) == "<p>given</p>"
    older = record_run(job_summary(population={}), source="tx", model="m", engine="local")
    names = [a.path for a in MlflowClient(tracking_uri=tracking).list_artifacts(older)]
    assert names == ["scoring_summary.json"]  # nothing to draw: no report


def test_plan_runs_log_budget_offers_economics_totals_plan_and_report(tracking) -> None:
    import json

    from mlflow.tracking import MlflowClient

    from serving.economics import Economics, Offer
    from serving.runs import PLAN_EXPERIMENT, REPORT_ARTIFACT, record_plan_run

    offers = [Offer("call", fixed_cost=30.0, save_rate=0.3), Offer("voucher", spend_share=0.1, save_rate=0.2)]
    run_id = record_plan_run(
        PLAN, budget=100.0, offers=offers, economics=Economics(contact_cost=1.0), source="tx.parquet",
        model="models:/retention@champion", summary=job_summary(), output="plans/plan.parquet",
    )  # fmt: skip
    client = MlflowClient(tracking_uri=tracking)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == PLAN_EXPERIMENT
    params, metrics = run.data.params, run.data.metrics
    assert params["budget"] == "100.0" and params["offers"] == "call,voucher" and params["as_of"] == "2024-12-30"
    assert params["output"] == "plans/plan.parquet" and params["model_version"] == "7"
    assert params["economics.contact_cost"] == "1.0" and params["economics.gross_margin"] == "bundle"
    assert metrics == {
        "customers_scored": 10, "candidates": 4, "customers_contacted": 3, "spend": 90, "expected_saved_value": 270,
        "expected_net_benefit": 180, "roi": 2, "sleeping_dogs": 1,
    }  # fmt: skip
    assert run.data.tags["uplift_source"] == "model"
    assert json.loads(artifact_text(tracking, run_id, "plan.json")) == PLAN
    economics = json.loads(artifact_text(tracking, run_id, "economics.json"))
    assert [o["name"] for o in economics["offers"]] == ["call", "voucher"] and economics["contact_cost"] == 1.0
    html = artifact_text(tracking, run_id, REPORT_ARTIFACT)
    assert "Retention plan, as of 2024-12-30, model version 7" in html and "Expected saved value" in html


def test_a_population_without_unprofitable_customers_or_drift_says_so() -> None:
    block = population()
    block["profit_curve"] = {"customer_share": SHARES.tolist(), "cumulative_profit": _curve(EV)}
    block["unprofitable"] = {"customers": 0, "expected_profit": 0.0}
    words = Page(render_report(summary_dict(population=block, psi={"a": 0.01, "b": 0.0}), title="t")).words()
    assert "No customer is unprofitable" in words and "could not be drawn" not in words
    assert "No drift: every feature stable (PSI below 0.1), 2 in all. 2 stable features" in words
    # profit = value here: the top 20% (two customers) make 700 of 1,000, the last three add 20
    assert "make 70.0% of the total expected profit (1,000); the least profitable 30% add 20 (2.0%" in words
