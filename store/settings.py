"""One settings object for api, worker and CLI, read from `XMODAL_*` environment variables.

Paths default under `data_dir` (`./var`), so pointing `XMODAL_DATA_DIR` elsewhere moves the
SQLite database, the filesystem broker and the blobs together — one variable per deployment.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

_S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^/].*)?/?")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str = Field("", description="default: SQLite file data_dir/xmodal.db")
    broker_url: str = Field("filesystem://", description="filesystem:// (folders under data_dir/broker) or redis://")
    blob_dir: Path | None = Field(None, description="default: data_dir/blobs")
    blob_url: str = Field("", description="s3://bucket/prefix: blobs in S3-compatible storage (credentials from the "
                                          "standard AWS variables); empty: the local blob_dir")
    s3_endpoint_url: str = Field("", description="an S3-compatible store's URL (MinIO: http://minio:9000); "
                                                 "empty: AWS, or AWS_ENDPOINT_URL when set")
    db_pool_size: int = Field(
        20, ge=1, description="PostgreSQL connections one process keeps (each API process, each worker process): "
                              "keep their sum under the server's max_connections (100 by default)")
    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    lease_seconds: float = Field(120.0, gt=0, description="a job whose lease is not renewed this long is re-queued")
    heartbeat_seconds: float = Field(10.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="claims of one job before a lost lease fails it")
    redis_visibility_seconds: float = Field(
        3600.0, gt=0, description="Redis re-delivers an unacknowledged message this old; running jobs keep theirs fresh")
    requeue_grace_seconds: float = Field(
        30.0, ge=0, description="a queued job this old with no broker message gets its message re-sent")
    model_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    allowed_hub_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_page_limit: int = Field(100, ge=1, description="largest `limit` a list request may ask for")
    idempotency_ttl_seconds: float = Field(86400.0, gt=0, description="how long an Idempotency-Key is remembered")
    rate_limit_per_minute: int = Field(600, ge=0, description="requests per API key per API process; 0: no limit")
    max_active_jobs: int = Field(32, ge=0, description="queued + running jobs per owner; 0: no limit")
    max_storage_bytes: int = Field(100 * 1024**3, ge=0, description="live files' bytes per owner; 0: no limit")
    stream_poll_seconds: float = Field(0.5, gt=0, description="how often an SSE stream reads new rows")
    stream_keepalive_seconds: float = Field(15.0, gt=0, description="SSE comment sent on a quiet stream this often")
    max_streams_per_key: int = Field(16, ge=0, description="open SSE streams per API key per API process; 0: no limit")
    max_streams: int = Field(256, ge=0, description="open SSE streams per API process, all keys together; 0: no limit")
    stream_key_check_seconds: float = Field(
        5.0, gt=0, description="how often an open SSE stream re-checks its API key: a revoked key's streams end within this")
    api_key_cache_seconds: float = Field(
        5.0, ge=0, description="an API process trusts a key it checked this long; another process's revoke "
                               "reaches it within this (its own at once); 0: check every request")
    max_json_bytes: int = Field(1024**2, ge=1, description="largest JSON request body; past it a 413, before it is read")
    body_read_timeout_seconds: float = Field(
        30.0, gt=0, description="a request body (an upload, JSON) that sends no bytes this long is cut off with a 408")
    body_min_bytes_per_second: int = Field(
        1024, ge=0, description="a body slower than this on average, once it is one read timeout old, is cut off; 0: no minimum")
    max_uploads_per_key: int = Field(4, ge=0, description="uploads in progress per API key per API process; 0: no limit")
    max_uploads: int = Field(
        16, ge=0, description="uploads in progress per API process, all keys together (each may hold a thread while it is validated); 0: no limit")
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line")
    max_experiment_jobs: int = Field(200, ge=1, description="most jobs one experiment's grid may create")

    @field_validator("model_roots", "allowed_hub_models", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """Accept `a,b` from the environment as well as real lists."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("blob_url")
    @classmethod
    def _check_blob_url(cls, value: str) -> str:
        if value and not _S3_URL.fullmatch(value):
            raise ValueError(f"expected s3://bucket or s3://bucket/prefix (a lowercase S3 bucket name), not {value!r}")
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        """Make every path absolute here, once: a relative one means another folder to each process
        (and to a symlink in a job's scratch folder), so the embedded `./var` default broke jobs."""
        self.data_dir = self.data_dir.expanduser().absolute()
        self.database_url = _absolute_sqlite_url(self.database_url or f"sqlite:///{self.data_dir / 'xmodal.db'}")
        self.blob_dir = (self.blob_dir or self.data_dir / "blobs").expanduser().absolute()
        self.model_roots = [root.expanduser().absolute() for root in self.model_roots]
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(f"XMODAL_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be shorter than "
                             f"XMODAL_LEASE_SECONDS ({self.lease_seconds:g}), or leases lapse between beats")
        if self.heartbeat_seconds >= self.redis_visibility_seconds:
            raise ValueError(f"XMODAL_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be shorter than "
                             f"XMODAL_REDIS_VISIBILITY_SECONDS ({self.redis_visibility_seconds:g}), "
                             "or running jobs' messages are re-delivered")
        return self

    @property
    def blob_root(self) -> Path:
        assert self.blob_dir is not None  # set by _derive_paths
        return self.blob_dir

    @property
    def broker_dir(self) -> Path:
        """Folders of the filesystem:// transport (used only when broker_url is filesystem://)."""
        return self.data_dir / "broker"

    @property
    def work_dir(self) -> Path:
        """Scratch space for running jobs; everything worth keeping goes to blobs."""
        return self.data_dir / "work"


class SettingsError(ValueError):
    """An invalid `XMODAL_*` variable, said in one line that names it (the CLI prints it, exit 2)."""


def _absolute_sqlite_url(url: str) -> str:
    """`sqlite:///var/x.db` names a file relative to the working directory; anchor it there now."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return url
    if parsed.database.startswith("file:") or Path(parsed.database).is_absolute():
        return url
    return parsed.set(database=str(Path(parsed.database).expanduser().absolute())).render_as_string(hide_password=False)


def _one_line(error: ValidationError) -> str:
    """Pydantic's report as `XMODAL_NAME: rule; …` instead of a multi-line traceback."""
    parts = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        field = item["loc"][0] if item["loc"] else None
        parts.append(f"XMODAL_{str(field).upper()}: {message}" if field is not None else message)
    return "; ".join(parts)


def load_settings() -> Settings:
    """Read the environment, raising SettingsError (not pydantic's ValidationError) when it is invalid."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings so the next get_settings() re-reads the environment (tests)."""
    get_settings.cache_clear()
