"""Runtime settings: every ``RETENTION_*`` environment variable in one typed object, read once per process.

CLI flags override these values for one command; the service reads them when it starts. The defaults need no
server: MLflow's local store, a SQLite online store under :attr:`Settings.home`, local files. The table in the
README ("Configuration") is generated from this class (:func:`settings_table`), so it cannot drift from it.

Use :func:`get_settings` (cached: the environment is read once); tests that change the environment call
``get_settings.cache_clear()``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_MODEL_NAME",
    "Settings",
    "champion_uri",
    "default_store_url",
    "get_settings",
    "settings_table",
]

DEFAULT_MODEL_NAME = "retention"
"""The registered model name (and MLflow experiment) when none is given."""
CHAMPION_ALIAS = "champion"


def champion_uri(model_name: str = DEFAULT_MODEL_NAME) -> str:
    """The registry URI of a model's champion: ``models:/<name>@champion``."""
    return f"models:/{model_name}@{CHAMPION_ALIAS}"


def default_store_url(home: Path) -> str:
    """The default (SQLite) online store under a data directory: ``sqlite:///<home>/online_store.db``."""
    return f"sqlite:///{(Path(home) / 'online_store.db').as_posix()}"


class Settings(BaseSettings):
    """The process's configuration, from ``RETENTION_<FIELD>`` environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="RETENTION_", frozen=True, extra="ignore")

    home: Path = Field(Path(".retention"), description="Data directory: default online store, batch run state.")
    model_name: str = Field(DEFAULT_MODEL_NAME, description="Registered model name (and MLflow experiment).")
    model_uri: str = Field(
        champion_uri(),
        description="Model to serve or score: models:/NAME@ALIAS, models:/NAME/VERSION or a model directory"
        " (unset: the champion of RETENTION_MODEL_NAME).",
    )
    store_url: str | None = Field(
        None,
        description="Online store: sqlite:///path.db, postgresql://..., redis://... "
        "(default: sqlite:///<home>/online_store.db, for both `materialize` and `serve`).",
    )
    max_customers: int = Field(1_000, ge=1, description="Customers in one /predict or /rank request at most.")
    max_transactions: int = Field(10_000, ge=1, description="Inline transactions per customer in a request at most.")
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1, description="Request body size limit in bytes (413 above).")
    scoring_threads: int = Field(4, ge=0, description="Service scoring threads (0 scores on the event loop).")
    workers: int = Field(
        1,
        ge=0,
        description="Service worker processes, one model copy each: one per core the service may use (0: one per"
        " core of the machine). All serve one model version; a reload reaches every worker.",
    )
    api_key: SecretStr | None = Field(None, description="When set, every API route needs it (Bearer or X-API-Key).")
    admin_key: SecretStr | None = Field(
        None, description="/admin/reload needs it as X-Admin-Key (besides the API key); unset, the route answers 403."
    )
    access_log: bool = Field(False, description="One access-log line per request (BentoML's access log).")
    client_error_log: bool = Field(True, description="One INFO line per client error (4xx) in the server log.")
    tracing: bool = Field(False, description="OpenTelemetry spans for the API routes too (off: health routes only).")
    debug: bool = Field(False, description="CLI: show tracebacks and library logs.")
    model_check_timeout: float = Field(
        300.0, gt=0, description="Seconds a model's load check in a child process may take."
    )
    spool_bytes: int = Field(
        1 << 30, ge=0, description="Batch inputs larger than this many bytes are spooled to partition files first."
    )
    batch_root: Path | None = Field(
        None,
        description="Folder the /batch task routes may read inputs from and write outputs to (paths inside it only);"
        " unset: the routes answer 403.",
    )
    batch_sql: bool = Field(False, description="/batch tasks may also read and write SQL URLs (off: paths only).")
    economics: Path | None = Field(
        None,
        description="JSON file of the economics (gross_margin, cost_to_serve_per_order, cost_per_refund, contact_cost,"
        " discount_rate, offers; see serving/economics.py) that every expected_profit and plan uses; `score` and"
        " `plan` --economics and their flags override it (unset: no costs, expected_profit = expected_value).",
    )
    scorecard_weights: str | None = Field(
        None,
        description="Weights of the scorecard's composite score, e.g. contribution=1,loyalty=2,potential=1 or a JSON"
        " object (see serving/scorecard.py); `score` and `plan` --scorecard-weights override it (unset: 1/3 each).",
    )
    spark_master: str | None = Field(
        None, description="Spark master URL for `--engine spark` (default: the one spark-submit gives, else local[2])."
    )

    @property
    def resolved_model_uri(self) -> str:
        """The model in use: :attr:`model_uri` when set, else the champion of :attr:`model_name`."""
        return self.model_uri if "model_uri" in self.model_fields_set else champion_uri(self.model_name)

    @property
    def resolved_store_url(self) -> str:
        """The store URL in use: :attr:`store_url`, else the SQLite file under :attr:`home`."""
        return self.store_url or default_store_url(self.home)

    @property
    def batch_dir(self) -> Path:
        """Where batch jobs keep their resumable state (``<home>/batch``)."""
        return self.home / "batch"

    @property
    def tasks_dir(self) -> Path:
        """Where the service's batch task records live (``<home>/tasks``, see :mod:`serving.batch_tasks`)."""
        return self.home / "tasks"


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment on first use."""
    return Settings()


def settings_table() -> str:
    """The Markdown table of every setting: variable, default, meaning (the README's "Configuration" table)."""
    prefix = Settings.model_config["env_prefix"]
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default.as_posix() if isinstance(default, Path) else default}`"
        lines.append(f"| `{prefix}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(lines)
