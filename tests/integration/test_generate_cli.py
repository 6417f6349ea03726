"""``retention generate`` with a simulated campaign and customer events: the files it writes follow their contracts
(nothing broken, both arms present, truth for every campaign row), and bad options exit 2 in one sentence."""

from __future__ import annotations

import pandas as pd
import pytest
from cli_util import run_cli

from features.campaigns import read_campaigns
from features.events import read_events
from features.synthetic_campaigns import RESPONSES


def test_generate_writes_a_campaign_its_truth_and_events_that_read_back_clean(tmp_path) -> None:
    paths = {name: tmp_path / f"{name}.csv" for name in ("tx", "campaigns", "truth", "events")}
    result = run_cli(
        "generate", "--customers", "600", "--days", "500", "--start", "2023-06-01", "--seed", "4",
        "--out", str(paths["tx"]), "--campaign-out", str(paths["campaigns"]), "--campaign-sent-at", "2024-06-01",
        "--campaign-truth", str(paths["truth"]), "--events-out", str(paths["events"]), "--horizon-days", "60",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    campaigns, report = read_campaigns(str(paths["campaigns"]), strict=True)
    assert report.rows_read == len(campaigns) > 0 and set(campaigns["treatment"]) == {0, 1}
    assert (campaigns["sent_at"].dt.date.astype(str) == "2024-06-01").all()
    truth = pd.read_csv(paths["truth"], dtype={"customer_id": "str"})
    assert sorted(truth["customer_id"]) == sorted(campaigns["customer_id"]) and set(truth["response"]) <= set(RESPONSES)
    events, event_report = read_events(str(paths["events"]), strict=True)
    assert event_report.rows_read == len(events) > 0 and "complaint" in set(events["type"])
    assert f"{len(campaigns):,} customers" in result.stderr and f"{len(events):,} customer events" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--campaign-out", "c.csv"), "error: --campaign-out and --campaign-sent-at go together"),
        (("--campaign-out", "c.json", "--campaign-sent-at", "2024-01-01"), "error: 'c.json' must end in .csv"),
        (("--campaign-out", "c.csv", "--campaign-sent-at", "2024-12-01"), "error: a campaign sent on 2024-12-01 needs"),
        (("--campaign-out", "c.csv", "--campaign-sent-at", "2024-13-01"), "error: "),
    ],
)
def test_bad_campaign_options_exit_2_with_one_sentence(tmp_path, args, message) -> None:
    result = run_cli(
        "generate", "--customers", "50", "--days", "400", "--start", "2024-01-01", "--out", str(tmp_path / "tx.csv"),
        *args, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "tx.csv").exists()
