"""One settings object for api, worker and CLI, read from `XMODAL_*` environment variables.

Paths default under `data_dir` (`./var`), so pointing `XMODAL_DATA_DIR` elsewhere moves the
SQLite database, the filesystem broker and the blobs together — one variable per deployment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str = Field("", description="default: SQLite file data_dir/xmodal.db")
    broker_url: str = Field("filesystem://", description="filesystem:// (folders under data_dir/broker) or redis://")
    blob_dir: Path | None = Field(None, description="default: data_dir/blobs")
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
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line")
    max_experiment_jobs: int = Field(200, ge=1, description="most jobs one experiment's grid may create")

    @field_validator("model_roots", "allowed_hub_models", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """Accept `a,b` from the environment as well as real lists."""
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'xmodal.db'}"
        if self.blob_dir is None:
            self.blob_dir = self.data_dir / "blobs"
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("heartbeat_seconds must be shorter than lease_seconds, or leases lapse between beats")
        if self.heartbeat_seconds >= self.redis_visibility_seconds:
            raise ValueError("heartbeat_seconds must be shorter than redis_visibility_seconds, "
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings so the next get_settings() re-reads the environment (tests)."""
    get_settings.cache_clear()
