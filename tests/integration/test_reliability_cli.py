"""Issue 14, CLI: bad as-of dates, column maps, implausible timestamps and outputs exit 2 with one sentence.

Every case runs the real ``retention`` command; none needs a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_util import run_cli

TX = (
    "customer_id,timestamp,amount,channel,category\n"
    "a,2024-01-02,10,web,x\n"
    "a,2024-02-03,20,web,y\n"
    "b,2024-01-15,5,store,x\n"
    "b,2024-03-30,7,store,y\n"
)
"""Last transaction 2024-03-30."""


@pytest.fixture
def tx(tmp_path: Path) -> Path:
    path = tmp_path / "tx.csv"
    path.write_text(TX)
    return path


def one_sentence_error(result, *fragments: str) -> str:
    """Exit 2, one ``error:`` line on stderr containing every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- as-of dates -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["features", "materialize"])
@pytest.mark.parametrize("as_of", ["2030-01-01", "9999-12-31", "2024-05-15"])
def test_an_as_of_date_after_the_last_transaction_is_refused(tmp_path: Path, tx: Path, command: str, as_of: str):
    out = ["-o", str(tmp_path / "f.csv")] if command == "features" else ["--store", f"sqlite:///{tmp_path}/s.db"]
    result = run_cli(command, "-t", str(tx), "--as-of", as_of, *out)
    one_sentence_error(
        result,
        f"as-of date {as_of} is",
        "after the last transaction (2024-03-30)",
        "tolerance of 31 day(s)",
        "up to 2024-04-30",
        "--allow-future-as-of",
    )
    assert not (tmp_path / "f.csv").exists() and not (tmp_path / "s.db").exists()


def test_train_with_a_future_as_of_date_exits_2_before_training(tmp_path: Path, tx: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    result = run_cli("train", "-t", str(tx), "--as-of", "2030-01-01", cwd=tmp_path, env=env)
    one_sentence_error(result, "as-of date 2030-01-01 is 2,103 days after the last transaction (2024-03-30)")


def test_train_with_a_forced_future_as_of_date_exits_2_instead_of_a_lightgbm_error(tmp_path: Path, tx: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = ("train", "-t", str(tx), "--as-of", "2030-01-01", "--allow-future-as-of")
    result = run_cli(*args, cwd=tmp_path, env=env)
    one_sentence_error(
        result, "no transaction in the 90 days before the as-of date 2030-01-01 (the last is on 2024-03-30)"
    )


def test_the_tolerance_and_the_override(tmp_path: Path, tx: Path) -> None:
    out = tmp_path / "f.csv"
    within = run_cli("features", "-t", str(tx), "--as-of", "2024-04-30", "-o", str(out))
    assert within.returncode == 0, within.stderr
    forced = run_cli("features", "-t", str(tx), "--as-of", "2030-01-01", "-o", str(out), "--allow-future-as-of")
    assert forced.returncode == 0, forced.stderr
    report = run_cli("quality", "-t", str(tx), "--as-of", "2030-01-01", "--json")  # quality only reports
    assert report.returncode == 0, report.stderr


@pytest.mark.parametrize("command", ["features", "quality", "score", "train", "materialize", "backtest"])
@pytest.mark.parametrize("as_of", ["2024-12-30T10:00", "2024-12-30 10:00", "30/12/2024", "2024-02-30", "soon"])
def test_as_of_must_be_a_calendar_date(tmp_path: Path, tx: Path, command: str, as_of: str) -> None:
    extra = {"features": ["-o", str(tmp_path / "f.csv")], "score": ["-o", str(tmp_path / "s.csv")]}
    result = run_cli(command, "-t", str(tx), "--as-of", as_of, *extra.get(command, []))
    one_sentence_error(result, f"as-of date '{as_of}' is not a date")


def test_min_date_must_be_a_calendar_date(tx: Path) -> None:
    result = run_cli("quality", "-t", str(tx), "--min-date", "1990-01-01T00:00")
    one_sentence_error(result, "'1990-01-01T00:00' is not a date")


# --- column maps -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("customer_id=channel,customer_id=category", ("maps 'customer_id' twice", "'channel' and 'category'")),
        (
            "customer_id=channel,transaction_id=channel",
            ("input column 'channel'", "'customer_id' and 'transaction_id'"),
        ),
        (",", ("column mapping ',' is empty",)),
        ("", ("column mapping '' is empty",)),
        (" , ", ("is empty",)),
        ("customer_id", ("must look like contract_name=input_name",)),
        ("client=cust", ("unknown column 'client'",)),
    ],
)
def test_malformed_column_maps_exit_2(tmp_path: Path, tx: Path, spec: str, fragments: tuple[str, ...]) -> None:
    result = run_cli(
        "features", "-t", str(tx), "--as-of", "2024-03-30", "-o", str(tmp_path / "f.csv"), "--columns", spec
    )
    one_sentence_error(result, *fragments)


@pytest.mark.parametrize("command", ["features", "quality", "train", "materialize", "backtest"])
def test_a_mapped_column_missing_from_the_input_is_named(tmp_path: Path, tx: Path, command: str) -> None:
    extra = {"features": ["-o", str(tmp_path / "f.csv")], "materialize": ["--store", f"sqlite:///{tmp_path}/s.db"]}
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = [command, "-t", str(tx), "--as-of", "2024-03-30", "--columns", "customer_id=cust", *extra.get(command, [])]
    result = run_cli(*args, cwd=tmp_path, env=env)
    one_sentence_error(result, "--columns maps input column 'cust' (for customer_id)", "the input does not have")


def test_a_mapped_column_shadows_an_input_column_of_the_same_name(tmp_path: Path, tx: Path) -> None:
    """customer_id=channel where the input also has customer_id: the mapping wins (no AttributeError)."""
    result = run_cli("quality", "-t", str(tx), "--columns", "customer_id=channel", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["customers"] == 2  # web, store


# --- implausible timestamps ----------------------------------------------------------------------------------------


def test_timestamps_before_the_floor_are_counted_and_fail_strict(tmp_path: Path) -> None:
    path = tmp_path / "tx.csv"
    path.write_text(TX + "a,1682-03-01T10:00:00,3,web,x\nb,1989-12-31,4,web,x\n")
    result = run_cli("quality", "-t", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rule_counts"]["implausible_timestamp"] == 2
    assert report["rows_read"] == report["rows_valid"] + sum(report["rule_counts"].values()) == 6
    assert report["rows_broken"] == 2 and report["first_date"] == "2024-01-02"
    strict = run_cli("quality", "-t", str(path), "--strict")
    one_sentence_error(strict, "--strict: 2 implausible timestamp row(s) break the input contract")
    lower = run_cli("quality", "-t", str(path), "--json", "--min-date", "1900-01-01")
    assert json.loads(lower.stdout)["rule_counts"]["implausible_timestamp"] == 1
    higher = run_cli("quality", "-t", str(path), "--json", "--min-date", "2024-02-01")
    assert json.loads(higher.stdout)["rule_counts"]["implausible_timestamp"] == 4


# --- outputs and stores ------------------------------------------------------------------------------------------


def test_features_into_an_unwritable_folder_exits_2(tmp_path: Path, tx: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli("features", "-t", str(tx), "--as-of", "2024-03-30", "-o", str(blocker / "f.csv"))
    one_sentence_error(result, f"cannot write the output '{blocker / 'f.csv'}'", f"'{blocker}' is not a folder")


def test_materialize_into_an_unreachable_store_exits_2(tmp_path: Path, tx: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://:pw@127.0.0.1:{port}/0"
    result = run_cli("materialize", "-t", str(tx), "--as-of", "2024-03-30", "--store", url)
    error = one_sentence_error(result, f"the online store redis://:***@127.0.0.1:{port}/0 cannot be reached")
    assert "pw" not in error


# --- the service without its online store ------------------------------------------------------------------------


def test_the_service_starts_and_scores_inline_while_the_store_is_unreachable(workspace) -> None:
    """A closed loopback port as the Redis store: /livez 200, inline /predict 200, by-id 503 naming the store,
    /readyz 200 "degraded" with the store's state (the worker no longer exits every ~10 s)."""
    from server_util import free_port, start_server, stop

    port = free_port()  # nothing listens there
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    shown = f"redis://:***@127.0.0.1:{port}/0"
    server = start_server(workspace, url, "models:/retention@champion")
    try:
        assert server.get("/livez").status_code == 200
        inline = {
            "customers": [{"customer_id": "walk-in", "transactions": [{"timestamp": "2024-11-02", "amount": 12.5}]}],
            "as_of": workspace.AS_OF,
        }
        scored = server.post("/predict", inline)
        assert scored.status_code == 200, scored.text
        assert 0 <= scored.json()["predictions"][0]["churn_probability"] <= 1
        by_id = server.post("/predict", {"customers": [{"customer_id": "C0000042"}]})
        assert by_id.status_code == 503, by_id.text
        message = by_id.json()["error"]
        assert message.startswith(f"the online store {shown} is unavailable (") and "s3cret" not in by_id.text
        ranked = server.post("/rank", {"customers": [{"customer_id": "C0000042"}]})
        assert ranked.status_code == 503 and ranked.json()["error"].startswith(f"the online store {shown}")
        ready = server.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "degraded"
        assert body["store"]["store"] == shown and body["store"]["available"] is False and body["store"]["error"]
        assert server.proc.poll() is None  # still the same process: no restart loop
    finally:
        stop(server)


def test_the_service_follows_the_store_down_and_back_up(workspace, tmp_path: Path) -> None:
    """A Redis store this test starts and stops: by-id 200, then 503 naming the store (was a generic 500) while it
    is down, then answers again once it is back, in the same server process."""
    import subprocess
    import time

    from server_util import free_port, start_server, stop

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while run_cli("materialize", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--store", url,
                      env=workspace.env).returncode != 0:  # fmt: skip
            assert time.monotonic() < deadline, "redis-server did not come up"
        return proc

    def stop_redis(proc: subprocess.Popen) -> None:
        proc.terminate()
        proc.wait(20)

    import pandas as pd

    known = sorted(pd.read_parquet(workspace.transactions)["customer_id"].unique())[0]
    redis_proc = start_redis()
    server = start_server(workspace, url, "models:/retention@champion")
    try:
        by_id = {"customers": [{"customer_id": known}]}
        assert server.post("/predict", by_id).status_code == 200
        stop_redis(redis_proc)
        down = server.post("/predict", by_id)
        assert down.status_code == 503, down.text
        assert down.json()["error"].startswith(f"the online store {url} is unavailable (")
        assert server.get("/readyz").json()["store"]["available"] is False
        redis_proc = start_redis()  # empty again (no persistence): materialized anew before it counts as up
        deadline = time.monotonic() + 30
        while (back := server.post("/predict", by_id)).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)
        assert back.json()["predictions"][0]["customer_id"] == known and "error" not in back.json()["predictions"][0]
        assert server.get("/readyz").status_code == 200
    finally:
        stop(server)
        if redis_proc.poll() is None:
            stop_redis(redis_proc)
