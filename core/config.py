"""The job config: one pydantic model for a whole job, shared by `xmodal train` and the REST API.

Importable without torch. Every section forbids unknown keys, so a typo is an error naming the
field rather than a silently ignored setting. The sections every method shares are declared here;
the method names and each method's own sections come from the recipe registry (`core.methods`), so
`JobConfig`, `METHODS` and `Method` are derived from it whenever they are read.
"""

from __future__ import annotations

import json
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator

from core import methods
from core.errors import ConfigError
from core.sections import Section

DEFAULT_METHOD = "orca"


class TaskType(str, Enum):
    classification = "classification"
    multilabel = "multilabel"
    dense_regression = "dense_regression"  # 1D or 2D, output shaped like the input's spatial dims
    dense_binary = "dense_binary"
    scalar_regression = "scalar_regression"


SELECTION_METRIC = {
    TaskType.classification: "error",
    TaskType.multilabel: "auroc_error",
    TaskType.dense_regression: "relative_l2",
    TaskType.dense_binary: "auroc_error",
    TaskType.scalar_regression: "mae",
}
"""Each task's primary metric (lower is better): what refining selects on and experiments compare.
Here, not in core.modeling.tasks, so the API reads it without torch."""


class BodyConfig(Section):
    name: str = Field("minilm-l6", min_length=1, max_length=512,
                      description="alias (minilm-l6, tiny-bert, tiny-swin), model directory or hub name")
    pretrained: bool = Field(True, description="false: same architecture, random init (ablation)")
    dropout: float | None = Field(0.0, ge=0, lt=1,
                                  description="hidden and attention dropout inside the body; the ORCA and PaRe "
                                              "reference configs use 0; None keeps the pretrained config's "
                                              "(MiniLM: 0.1)")


class EmbedderConfig(Section):
    target_seq_len: int = Field(64, ge=1, le=4096, description="most tokens a 1D input becomes")
    patch_size: int | None = Field(None, ge=1, le=256, description="2D patch side; None picks one")
    norm: Literal["positions_first", "token", "sequence"] = Field(
        "positions_first", description="text bodies: positions_first = LayerNorm(patch + position), the "
                                       "pretrained embedding's own order, keeps each patch's scale; token = "
                                       "LayerNorm(patch) + position (ORCA; drops each patch's scale); sequence "
                                       "= one LayerNorm over all tokens of a sample, then positions")


class AlignmentConfig(Section):
    objective: Literal["otdd_exact", "otdd_gaussian", "mmd", "l2"] = "otdd_exact"
    epochs: int = Field(60, ge=0, le=10_000, description="embedder-alignment epochs; 0 skips the stage")
    maxsamples: int = Field(64, ge=2, le=100_000, description="target samples per alignment step")
    proxy: str = Field("auto", min_length=1, max_length=512,
                       description="auto (the candidate nearest the target by OTDD, <model_root>/proxies/*.npz "
                                   "included) | wordnet | fashion-mnist | digits | path to a labelled .npz")
    proxy_samples: int = Field(5000, ge=10, le=100_000)
    lr: float | None = Field(None, gt=0, le=10, description="default: 10x the training lr")
    epsilon: float = Field(0.1, gt=0, le=100, description="entropic regularisation of Sinkhorn")
    pseudo_labels: int = Field(10, ge=2, le=1000, description="k-means k for targets without classes")


MAX_EPOCHS = 10_000
MAX_TIME_BUDGET_SECONDS = 30 * 24 * 3600


class TrainingConfig(Section):
    epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | Literal["auto"] = Field(
        "auto", description="refine epochs, or auto: the step count follows the train set size "
                            "(3 epochs of steps within a floor and a cap: core.training.budget)")
    time_budget_seconds: float | None = Field(
        None, gt=0, le=MAX_TIME_BUDGET_SECONDS,
        description="cap on the job's wall-clock seconds, set-up and stage 1 included; the lr anneals to 0 at "
                    "the deadline and the job then ends normally (validation, best weights, test, checkpoint)")
    max_steps: int | None = Field(None, ge=1, le=10_000_000, description="cap on optimizer steps")
    batch_size: int = Field(32, ge=1, le=65_536)
    grad_accumulation: int = Field(1, ge=1, le=1024)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-4, gt=0, le=10)
    new_parts_lr_multiplier: float = Field(10.0, gt=0, le=1000,
                                           description="lr of the parts trained from scratch (embedder, head, "
                                                       "recipe modules) as a multiple of lr; 1: one lr for all")
    weight_decay: float = Field(0.0, ge=0, le=10)
    warmup_fraction: float = Field(0.1, ge=0, lt=1, description="share of steps spent warming up")
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    clip_grad_norm: float | None = Field(1.0, gt=0, le=1e6)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast dtype on CUDA")

    @field_validator("epochs", mode="before")
    @classmethod
    def _auto_or_epochs(cls, value: Any) -> Any:
        """One clear message for junk (a plain union would report one error per member)."""
        if value == "auto" and isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCHS:
            return value
        raise ValueError(f"expected 'auto' or an integer number of epochs from 0 to {MAX_EPOCHS}, got {value!r}")


class EvaluationConfig(Section):
    validation_fraction: float = Field(0.1, ge=0, lt=0.9,
                                       description="held out from train when no x_val is given")
    metric: str | None = Field(None, max_length=64, description="selection metric; None: the task's first")
    baseline: bool = Field(True, description="fit a classical baseline (core.baseline) on the same splits and "
                                             "report it beside the model's metrics")
    baseline_seconds: float = Field(60.0, gt=0, le=3600, description="time cap of the baseline: it subsamples "
                                                                     "train rows and features to fit in it")


class CheckpointConfig(Section):
    every_epochs: int = Field(1, ge=1, le=10_000)
    every_steps: int | None = Field(None, ge=1, le=10_000_000)
    keep_last: int = Field(2, ge=1, le=1000, description="resumable checkpoints kept on disk (older ones are deleted)")


class SharedConfig(Section):
    """The part of a job config every method reads; `JobConfig` adds `method` and the recipes' sections."""

    method: str = DEFAULT_METHOD
    body: BodyConfig = Field(default_factory=BodyConfig)
    task: TaskType | None = Field(None, description="inferred from the data when not given")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    freeze: Literal["none", "embedder", "body", "both"] = "none"
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @property
    def alignment_epochs(self) -> int:
        """Epochs the alignment stage actually runs: plain fine-tuning has none, whatever `alignment` says,
        so a config can switch `method` without editing its other sections (and dumps re-validate)."""
        return 0 if self.method == "finetune" else self.alignment.epochs


@cache
def _job_config(names: tuple[str, ...], sections: tuple[tuple[str, type[Section]], ...]) -> type[SharedConfig]:
    fields: dict[str, Any] = {key: (section, Field(default_factory=section)) for key, section in sections}
    return create_model("JobConfig", __base__=SharedConfig, __module__=__name__,
                        __doc__="Everything one job needs. `method` picks the recipe; the sections configure its parts.",
                        method=(Literal[names], DEFAULT_METHOD), **fields)


def job_config_model() -> type[SharedConfig]:
    """The JobConfig model of the methods registered now."""
    registered = methods.recipes()
    return _job_config(tuple(registered), tuple(methods.sections_of(registered.values()).items()))


def __getattr__(name: str) -> Any:
    """`JobConfig`, `METHODS` (the method names) and `Method` (their Literal), as the registry has them now."""
    if name == "JobConfig":
        return job_config_model()
    if name == "METHODS":
        return tuple(methods.recipes())
    if name == "Method":
        return Literal[tuple(methods.recipes())]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _field_of(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "config"


def parse_config(data: Any) -> SharedConfig:
    """Validate a mapping into a JobConfig, raising ConfigError that names the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of sections", field="config")
    try:
        return job_config_model().model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(first["msg"], field=_field_of(first)) from None


def load_config(path: str | Path) -> SharedConfig:
    """Read a YAML or JSON job file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", field="config") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", field="config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}{where}", field="config") from None
    return parse_config(data if data is not None else {})


def config_from_job_request(model: str, method: dict[str, Any], seed: int | None = None) -> SharedConfig:
    """Map the REST body (`model`, `method: {type, <type>: {sections}}`, `seed`) onto a JobConfig.

    `method.<type>` takes the same sections as a YAML job file, so one config runs both ways.
    """
    if not isinstance(method, dict):
        raise ConfigError("expected an object with 'type'", field="method")
    kind = method.get("type", DEFAULT_METHOD)
    if kind not in methods.recipes():
        raise ConfigError(f"unknown method {kind!r}; expected one of {', '.join(methods.recipes())}",
                          field="method.type")
    unknown = set(method) - {"type", kind}
    if unknown:
        raise ConfigError(f"unexpected key(s) {sorted(unknown)}", field="method")
    sections = method.get(kind) or {}
    if not isinstance(sections, dict):
        raise ConfigError("expected an object of config sections", field=f"method.{kind}")
    data: dict[str, Any] = {**sections, "method": kind}
    body = dict(data.get("body") or {})
    body["name"] = model
    data["body"] = body
    if seed is not None:
        data["training"] = {**(data.get("training") or {}), "seed": seed}
    try:
        return parse_config(data)
    except ConfigError as exc:
        field = exc.field or "config"
        field = "model" if field == "body.name" else f"method.{kind}.{field}"
        raise ConfigError(exc.message, field=field) from None
