"""A method is one recipe file: this file alone registers a toy method (its own config section, its
own stage before refine) and runs it through the config, `core.run`, an exact resume and a real job
in the worker. If adding a method needed an edit anywhere else, `toy` would be refused here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import Field

import core
from core import methods
from core.config import config_from_job_request, parse_config
from core.errors import ConfigError
from core.methods import Recipe, RecipeStage, register
from core.sections import Section
from store.db import session_scope
from store.repositories import events
from store.settings import Settings
from tests.core.conftest import write_classification_1d
from tests.core.helpers import StepLog, assert_resumes_exactly
from tests.service.test_worker import load, submit
from tests.service.test_worker_real_run import set_config, tiny_dataset
from worker.lifecycle import execute_job

if TYPE_CHECKING:
    from core.config import JobConfig
    from core.training.run import Run


class ToyConfig(Section):
    """The toy method's own section."""

    steps: int = Field(2, ge=0, le=100, description="head-only warm-up steps before refine")
    lr: float = Field(1e-2, gt=0, le=1)


def warm_up_head(run: Run) -> None:
    """Train only the head, one random batch per step: a stage that must checkpoint and resume."""
    import torch

    cfg = run.config.toy
    head = run.model.head
    optimizer = torch.optim.SGD(head.parameters(), lr=cfg.lr)
    run.track_state("warmup_optimizer", optimizer)
    run.enter_stage("warmup", f"warmup: {cfg.steps} head-only steps")
    while run.position.stage_epoch < cfg.steps:
        step = run.position.stage_epoch
        index = torch.randperm(len(run.data.train), generator=run.epoch_generator(step))[:8]
        with torch.no_grad():  # only the head learns here
            tokens, grid = run.model.embed(run.data.train.x[index].to(run.device))
            hidden = run.model.encode(tokens, grid)
        output = head(hidden, grid)
        loss = torch.nn.functional.cross_entropy(output, run.data.train.y[index].to(run.device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        run.finish_epoch()
        run.metric("warmup_loss", loss.item(), "warmup", step)
        run.step_done()
    run.save_checkpoint()


def warmup_steps(config: JobConfig, train_size: int) -> int:
    return config.toy.steps


TOY = Recipe("toy", stages=(RecipeStage("warmup", warm_up_head, warmup_steps),), sections={"toy": ToyConfig})
TOY_CONFIG = {"method": "toy", "body": {"name": "tiny-bert"}, "toy": {"steps": 3},
              "training": {"epochs": 2, "batch_size": 16, "lr": 1e-3}}


@pytest.fixture
def toy() -> Iterator[Recipe]:
    register(TOY)
    yield TOY
    methods.unregister(TOY.name)


def test_the_config_takes_the_method_and_its_section(toy: Recipe) -> None:
    config = parse_config({"method": "toy", "toy": {"steps": 5}})
    assert config.toy.steps == 5 and "toy" in core.config.METHODS and "warmup" in methods.stage_names()
    assert parse_config(config.model_dump(mode="json")) == config  # stored configs re-validate
    with pytest.raises(ConfigError) as caught:
        parse_config({"method": "toy", "toy": {"stepz": 1}})
    assert caught.value.field == "toy.stepz"
    rest = config_from_job_request("tiny-bert", {"type": "toy", "toy": {"toy": {"steps": 1}}})
    assert (rest.method, rest.toy.steps) == ("toy", 1)


def test_without_registering_it_the_method_is_unknown() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"method": "toy"})
    assert caught.value.field == "method"


def test_core_runs_the_toy_method_and_resumes_it_exactly(toy: Recipe, tmp_path: Path) -> None:
    data = write_classification_1d(tmp_path / "train.npz")
    config = parse_config(TOY_CONFIG)
    log = StepLog()
    straight = core.run(config, data, tmp_path / "straight", callbacks=[log])
    assert straight.reason == "completed", straight.error
    started = [e.data["stage_started"] for e in log.events if "stage_started" in e.data]
    assert started == ["warmup", "refine"] and log.steps == list(range(1, straight.step + 1))
    assert straight.step > 3 and straight.summary["method"] == "toy"
    assert_resumes_exactly(config, data, tmp_path / "stopped-in-warmup", 2, straight)
    assert_resumes_exactly(config, data, tmp_path / "stopped-in-refine", 4, straight)


def test_a_job_runs_the_toy_method_in_the_worker(toy: Recipe, settings: Settings) -> None:
    owner_id, job_id = submit(settings, data=tiny_dataset())
    set_config(job_id, {**TOY_CONFIG, "training": {"epochs": 1, "batch_size": 8}})
    assert execute_job(job_id, settings) == "succeeded", load(job_id).error
    with session_scope() as s:
        stages = {event.stage for event in events.list_events(s, owner_id, job_id, limit=500).items}
    assert {"warmup", "refine", "evaluate"} <= stages
    assert load(job_id).result["summary"]["method"] == "toy"
