"""`retention acquisition` as a user runs it: the hand-made log of the unit tests as a CSV file, JSON and table
output, and bad input answered in one sentence with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from acquisition_util import acquisition_log
from cli_util import run_cli


@pytest.fixture(scope="module")
def log_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acquisition") / "tx.csv"
    acquisition_log().to_csv(path, index=False)  # web: 2 customers, mean value 135; all: mean 61
    return path


def test_json_forecast(log_file: Path) -> None:
    args = ["acquisition", "-t", str(log_file), "--as-of", "2024-06-30", "--horizon-days", "30"]
    result = run_cli(*args, "--cohort-days", "30", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    rows = {row["group"]: row for row in document["rows"]}
    assert (document["as_of"], document["horizon_days"], document["by"]) == ("2024-06-30", 30, "channel")
    assert (rows["web"]["customers"], rows["web"]["value"], rows["all"]["value"]) == (2, 135.0, 61.0)
    assert "2024-05-02 .. 2024-05-31" in document["caveat"]


def test_table_forecast_by_everyone(log_file: Path) -> None:
    window = ["--horizon-days", "30", "--cohort-days", "30"]
    result = run_cli("acquisition", "-t", str(log_file), "--as-of", "2024-06-30", *window, "--by", "all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| group ") and "| all " in result.stdout and "| web " not in result.stdout
    assert "Data quality" in result.stderr  # the contract's report, as for every command reading transactions


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--as-of", "2023-07-01"], "error: nobody was acquired between 2023-01-03 and 2023-04-02"),
        (["--as-of", "2024-06-30", "--by", "region"], "error: --by must be one of channel, category, all"),
        (["--as-of", "30/06/2024"], "30/06/2024"),
    ],
)
def test_bad_input_exits_2(log_file: Path, extra: list[str], message: str) -> None:
    result = run_cli("acquisition", "-t", str(log_file), *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
