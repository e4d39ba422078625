"""Fine-tuning jobs and what they produce: events, metric points, checkpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Row

from api.schemas.common import ErrorDetail, unix, unix_or_none
from store.models import Checkpoint, Job, JobEvent, MetricPoint
from store.repositories.jobs import QueueSlot


SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
"""Names and ids hold no control characters (PostgreSQL text cannot even store NUL: it was a 500)."""
NO_NUL = r"^[^\x00]*$"

ShortName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=SINGLE_LINE)]
FileId = MetadataKey = ShortName
MetadataValue = Annotated[str, StringConstraints(max_length=512, pattern=NO_NUL)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=SINGLE_LINE)]


class TrainingRequest(BaseModel):
    """What a job and an experiment both name: the body, the data, the base method config, metadata.
    `method.<type>` takes the sections of a YAML job file (alignment, training, embedder, evaluation,
    …); core's schema validates them."""

    model_config = ConfigDict(extra="forbid")

    model: ModelName = Field(description="body: alias (minilm-l6, tiny-bert), model dir or hub name")
    training_file: FileId
    validation_file: FileId | None = None
    method: dict[str, Any] = Field(
        default_factory=lambda: {"type": "orca"},
        description='{"type": "orca", "orca": {"alignment": {...}, "training": {...}}}',
        examples=[{"type": "orca", "orca": {"training": {"epochs": 3, "batch_size": 32}}}],
    )
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)


class JobCreate(TrainingRequest):
    """`POST /v1/fine_tuning/jobs`."""

    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    suffix: ShortName | None = None


class JobProgress(BaseModel):
    stage: str | None = None
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    eta_seconds: float | None = None


def method_of(config: dict[str, Any]) -> dict[str, Any]:
    """The stored (fully defaulted) config in the request's `method` shape, so it can be resubmitted."""
    kind = config.get("method", "orca")
    return {"type": kind, kind: {key: value for key, value in config.items() if key != "method"}}


class JobHyperparameters(BaseModel):
    """The training stage's settings under OpenAI's names; the full config is in `method`."""

    batch_size: int
    n_epochs: int | Literal["auto"] = Field(description="refine epochs, or auto (steps from the train set size), "
                                                    "as OpenAI's n_epochs")
    learning_rate: float = Field(description="absolute, not OpenAI's multiplier")


class JobObject(BaseModel):
    """A job; the fields from `organization_id` to `trained_tokens` are OpenAI's, so its SDK reads it."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    method: dict[str, Any]
    training_file: str
    validation_file: str | None
    seed: int = Field(description="the seed the job runs with: the request's, else the config's")
    suffix: str | None
    metadata: dict[str, str] | None
    progress: JobProgress | None
    attempt: int
    max_attempts: int
    cancel_requested: bool = Field(description="true once cancel was asked; a running job stops at its next step")
    queue_position: int | None = Field(description="1 = next to start, among the deployment's queued jobs; "
                                                   "null unless queued")
    estimated_start: int | None = Field(description="unix seconds, from recent jobs' durations and the live "
                                                    "workers; null unless queued, or with no finished job yet")
    created_at: int
    started_at: int | None
    finished_at: int | None
    error: ErrorDetail | None
    result: dict[str, Any] | None = Field(description="once finished: `summary` (the model's validation and test "
                                                      "metrics, lower is better), `baseline` (a classical model fitted "
                                                      "on the same splits and scored with the same metrics: `method`, "
                                                      "`params`, `validation`, `test`, `seconds`), `checkpoint`, `step`")
    organization_id: str = Field(description="the owner's id")
    fine_tuned_model: str | None = Field(description="the final checkpoint's id once succeeded: download it "
                                                     "from …/checkpoints/{id}/content")
    hyperparameters: JobHyperparameters
    result_files: list[str] = Field(default_factory=list, description="always empty: the metric history is at "
                                                                      "…/metrics")
    trained_tokens: None = Field(None, description="always null: training is not counted in tokens")

    @classmethod
    def from_row(cls, row: Job | Row[Any], slot: QueueSlot | None = None) -> JobObject:
        """From an ORM job or a read-only row with the same attribute names (jobs.get_with_slot)."""
        training = row.config["training"]
        return cls(
            id=row.id, status=row.status, model=row.model, method=method_of(row.config),  # type: ignore[arg-type]
            training_file=row.training_file_id, validation_file=row.validation_file_id, seed=training["seed"],
            suffix=row.suffix, metadata=row.metadata_,
            progress=JobProgress.model_validate(row.progress) if row.progress else None,
            attempt=row.attempt, max_attempts=row.max_attempts, cancel_requested=row.cancel_requested,
            queue_position=slot.position if slot else None, estimated_start=slot.estimated_start if slot else None,
            created_at=unix(row.created_at), started_at=unix_or_none(row.started_at),
            finished_at=unix_or_none(row.finished_at),
            error=ErrorDetail.model_validate(row.error) if row.error else None, result=row.result,
            organization_id=row.owner_id,
            fine_tuned_model=(row.result or {}).get("checkpoint") if row.status == "succeeded" else None,
            hyperparameters=JobHyperparameters(batch_size=training["batch_size"], n_epochs=training["epochs"],
                                               learning_rate=training["lr"]),
        )


class EventObject(BaseModel):
    id: int = Field(description="increasing; page with after=<the last id seen>")
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    stage: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: JobEvent) -> EventObject:
        return cls(id=row.id, created_at=unix(row.created_at), level=row.level, stage=row.stage,
                   message=row.message, data=row.data)


class MetricObject(BaseModel):
    id: int
    object: Literal["fine_tuning.job.metric"] = "fine_tuning.job.metric"
    key: str
    value: float
    step: int
    epoch: int | None
    split: str
    created_at: int

    @classmethod
    def from_row(cls, row: MetricPoint) -> MetricObject:
        return cls(id=row.id, key=row.key, value=row.value, step=row.step, epoch=row.epoch, split=row.split,
                   created_at=unix(row.created_at))


class CheckpointObject(BaseModel):
    """`step_number` and `fine_tuned_model_checkpoint` are OpenAI's names (for its SDK)."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    fine_tuning_job_id: str
    created_at: int
    step: int
    step_number: int = Field(description="= step")
    fine_tuned_model_checkpoint: str = Field(description="= id: the name this checkpoint's model goes by")
    epoch: int | None
    stage: str
    final: bool
    metrics: dict[str, Any] | None
    sha256: str = Field(description="of the tar; the download's ETag")
    bytes: int

    @classmethod
    def from_row(cls, row: Checkpoint) -> CheckpointObject:
        return cls(id=row.id, fine_tuning_job_id=row.job_id, created_at=unix(row.created_at), step=row.step,
                   step_number=row.step, fine_tuned_model_checkpoint=row.id, epoch=row.epoch, stage=row.stage,
                   final=row.final, metrics=row.metrics, sha256=row.sha256, bytes=row.bytes)
