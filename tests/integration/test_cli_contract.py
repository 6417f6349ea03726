"""The input contract through the real command: every rule is counted, bad input exits 2 with one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cli_util import run_cli

GOOD = "customer_id,timestamp,amount,transaction_id\n00042,2024-01-01,10,t1\n00042,2024-01-05T10:00:00+02:00,5,t2\n"


def write(tmp_path: Path, text: str, name: str = "tx.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def quality(path: Path, *extra: str) -> dict:
    result = run_cli("quality", "--transactions", str(path), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (",2024-01-02,3,t9", "null_customer_id"),
        ("   ,2024-01-02,3,t9", "null_customer_id"),
        ("00042,not-a-date,3,t9", "bad_timestamp"),
        ("00042,,3,t9", "bad_timestamp"),
        ("00042,0024-01-02,3,t9", "bad_timestamp"),  # outside the nanosecond range: a typo, not a date
        ("00042,9999-12-31T00:00:00,3,t9", "bad_timestamp"),
        ("00042,2024-01-02,,t9", "bad_amount"),
        ("00042,2024-01-02,NaN,t9", "bad_amount"),
        ("00042,2024-01-02,inf,t9", "bad_amount"),
        ("00042,2024-01-02,abc,t9", "bad_amount"),
        ("00042,2024-01-01,10,t1", "duplicate_line"),  # an exact copy of an earlier row
    ],
)
def test_each_broken_row_is_counted_by_rule_and_fails_strict(tmp_path: Path, row: str, rule: str) -> None:
    path = write(tmp_path, GOOD + row + "\n")
    report = quality(path)
    assert report["rule_counts"][rule] == 1
    assert report["rows_read"] == 3 and report["rows_valid"] == 2 and report["rows_broken"] == 1
    strict = run_cli("quality", "--transactions", str(path), "--strict")
    assert strict.returncode == 2
    assert rule.replace("_", " ") in strict.stderr and "Traceback" not in strict.stderr


def test_rows_after_as_of_are_counted_not_broken(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "00042,2024-02-01,7,t3\n")
    report = quality(path, "--as-of", "2024-01-31", "--strict")
    assert report["rule_counts"]["after_as_of"] == 1 and report["rows_broken"] == 0 and report["rows_valid"] == 2


def test_refunds_and_zero_amounts_are_valid(tmp_path: Path) -> None:
    report = quality(write(tmp_path, GOOD + "00042,2024-01-06,-5,t3\n00042,2024-01-07,0,t4\n"))
    assert report["rows_valid"] == 4 and report["refunds"] == 1 and report["zero_amount"] == 1
    assert report["refund_share"] == pytest.approx(5 / 15)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer_id,amount\n1,2\n", "required column 'timestamp' is missing"),
        ("customer_id,timestamp,amount\n,2024-01-01,1\n", "no valid transaction"),
        ("", "cannot read"),
    ],
)
def test_unusable_input_exits_2_with_one_sentence(tmp_path: Path, text: str, message: str) -> None:
    result = run_cli(
        "features", "-t", str(write(tmp_path, text)), "--as-of", "2024-02-01", "-o", str(tmp_path / "f.csv")
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "f.csv").exists()


def test_missing_file_and_wrong_extension(tmp_path: Path) -> None:
    missing = run_cli("features", "-t", str(tmp_path / "nope.csv"), "--as-of", "2024-02-01", "-o", "x.csv")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    binary = tmp_path / "tx.parquet"
    binary.write_bytes(b"not parquet at all")
    bad = run_cli("features", "-t", str(binary), "--as-of", "2024-02-01", "-o", str(tmp_path / "f.csv"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = run_cli("features", "--bogus")
    assert result.returncode == 2 and "No such option" in result.stderr
    bad_date = run_cli("features", "-t", str(write(tmp_path, GOOD)), "--as-of", "yesterday", "-o", "f.csv")
    assert bad_date.returncode == 2 and "is not a date" in bad_date.stderr


def test_column_mapping_and_ids_stay_strings(tmp_path: Path) -> None:
    path = write(tmp_path, "cust,order_date,value\n00042,2024-01-01,10\n0042,2024-01-02,5\n")
    out = tmp_path / "features.csv"
    result = run_cli(
        "features",
        "-t",
        str(path),
        "--as-of",
        "2024-01-31",
        "-o",
        str(out),
        "--columns",
        "customer_id=cust,timestamp=order_date,amount=value",
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, dtype={"customer_id": str})
    assert table["customer_id"].tolist() == ["00042", "0042"]
    parquet = tmp_path / "features.parquet"
    assert (
        run_cli(
            "features",
            "-t",
            str(path),
            "--as-of",
            "2024-01-31",
            "-o",
            str(parquet),
            "--columns",
            "customer_id=cust,timestamp=order_date,amount=value",
        ).returncode
        == 0
    )
    assert pd.read_parquet(parquet)["customer_id"].tolist() == ["00042", "0042"]


def test_bad_column_mapping(tmp_path: Path) -> None:
    result = run_cli("quality", "-t", str(write(tmp_path, GOOD)), "--columns", "client=cust")
    assert result.returncode == 2 and "unknown column 'client'" in result.stderr


def test_timezones_convert_to_utc_and_naive_is_utc(tmp_path: Path) -> None:
    # 2024-01-31T23:30-02:00 is 2024-02-01T01:30 UTC: after an as-of of 2024-01-31
    text = "customer_id,timestamp,amount\na,2024-01-31T23:30:00-02:00,1\na,2024-01-31T23:30:00,1\na,2024-01-31,1\n"
    report = quality(write(tmp_path, text), "--as-of", "2024-01-31")
    assert report["rule_counts"]["after_as_of"] == 1 and report["rows_valid"] == 2


FLOAT_IDS = "CustomerID,InvoiceDate,Amount\n17850.0,2024-01-01,10\n17850,2024-01-05,5\n13047.0,2024-01-03,7\n"
FLOAT_MAP = "customer_id=CustomerID,timestamp=InvoiceDate,amount=Amount"


@pytest.mark.parametrize("command", ["quality", "features", "train", "backtest", "btyd", "materialize", "score"])
def test_every_command_that_reads_transactions_has_normalize_ids(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "--normalize-ids" in result.stdout


def test_features_with_normalize_ids_reads_float_ids_as_integers(tmp_path: Path) -> None:
    path = write(tmp_path, FLOAT_IDS)
    out = tmp_path / "features.csv"
    args = ("features", "-t", str(path), "--as-of", "2024-01-31", "--columns", FLOAT_MAP, "--out", str(out))
    plain = run_cli(*args)
    assert plain.returncode == 0, plain.stderr
    assert "--normalize-ids" in plain.stderr  # the report's warning says how
    assert sorted(pd.read_csv(out, dtype={"customer_id": str})["customer_id"]) == ["13047.0", "17850", "17850.0"]
    normalised = run_cli(*args, "--normalize-ids")
    assert normalised.returncode == 0, normalised.stderr
    table = pd.read_csv(out, dtype={"customer_id": str}).set_index("customer_id")
    assert sorted(table.index) == ["13047", "17850"] and table.loc["17850", "n_transactions"] == 2


def test_training_flags_state_the_training_config_defaults() -> None:
    """The flags default to None (the config's value); their help names that value, and it must be the config's."""
    from training.config import DEFAULT_CONFIG

    result = run_cli("train", "--help", env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for flag, value in (
        ("--horizon-days", DEFAULT_CONFIG.horizon_days),
        ("--min-history-days", DEFAULT_CONFIG.min_history_days),
        ("--tune", DEFAULT_CONFIG.tune),
        ("--seed", DEFAULT_CONFIG.seed),
        ("--discount-rate", f"{DEFAULT_CONFIG.discount_rate:g}"),
        ("--margin", f"{DEFAULT_CONFIG.margin:g}"),
    ):
        line = next(line for line in lines if f" {flag} " in line)
        assert f"(default {value}" in line, line
    assert f"{DEFAULT_CONFIG.level_source} (the estimator that backtests best; default)" in " ".join(lines)
