"""One settings object: the README's table is generated from it, `retention settings` prints it, and the default
online store is the same for `materialize` and `serve` (materialize-then-serve answers by id)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cli_util import REPO

from retention.settings import Settings, get_settings, settings_table

README = REPO / "README.md"
TABLE = re.compile(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", re.S)


@pytest.fixture
def clean_env(monkeypatch):
    """No RETENTION_* variable from the caller's environment; the settings cache cleared before and after."""
    for name in [n for n in os.environ if n.startswith("RETENTION_")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_readme_configuration_table_is_the_generated_one() -> None:
    found = TABLE.search(README.read_text())
    assert found, "README.md has no <!-- settings-table:start/end --> markers"
    assert found.group(1) == settings_table(), "regenerate the README table from retention.settings.settings_table()"


def test_the_table_names_every_setting_once() -> None:
    rows = settings_table().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == [f"RETENTION_{name.upper()}" for name in Settings.model_fields]


def test_materialize_and_serve_share_one_default_store(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("RETENTION_HOME", str(tmp_path / "home"))
    settings = get_settings()
    assert settings.store_url is None
    assert settings.resolved_store_url == f"sqlite:///{(tmp_path / 'home' / 'online_store.db').as_posix()}"
    clean_env.setenv("RETENTION_STORE_URL", "redis://127.0.0.1:6379/0")
    assert get_settings().resolved_store_url == "sqlite:///" + str(tmp_path / "home" / "online_store.db"), "cached"
    get_settings.cache_clear()
    assert get_settings().resolved_store_url == "redis://127.0.0.1:6379/0"


def test_model_defaults_to_the_champion_of_the_model_name(clean_env) -> None:
    assert get_settings().resolved_model_uri == "models:/retention@champion"
    clean_env.setenv("RETENTION_MODEL_NAME", "churn-eu")
    get_settings.cache_clear()
    assert get_settings().resolved_model_uri == "models:/churn-eu@champion"
    clean_env.setenv("RETENTION_MODEL_URI", "models:/retention/3")
    get_settings.cache_clear()
    assert get_settings().resolved_model_uri == "models:/retention/3"
