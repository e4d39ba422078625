"""The job config: every invalid value names its field; dumps re-validate; the REST mapping; no torch."""

import json
import subprocess
import sys

import pytest

from core.config import METHODS, JobConfig, config_from_job_request, load_config, parse_config
from core.errors import ConfigError


@pytest.mark.parametrize("data,field", [
    ({"training": {"lr": -1}}, "training.lr"),
    ({"training": {"batch_size": 0}}, "training.batch_size"),
    ({"training": {"epochs": 10**9}}, "training.epochs"),
    ({"training": {"precision": "fp8"}}, "training.precision"),
    ({"alignment": {"objective": "kl"}}, "alignment.objective"),
    ({"freeze": "head"}, "freeze"),
    ({"method": "lora"}, "method"),
    ({"body": {"name": ""}}, "body.name"),
    ({"task": "segmentation"}, "task"),
    ({"evaluation": {"validation_fraction": 0.95}}, "evaluation.validation_fraction"),
    ({"contrastive": {"noise_scales": [0.5, 1.0]}}, "contrastive"),
    ({"trainig": {}}, "trainig"),
    ({"training": {"lr": "fast"}}, "training.lr"),
])
def test_invalid_values_name_the_field(data, field):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.field == field and field in str(caught.value)


@pytest.mark.parametrize("method", METHODS)
def test_dumped_config_validates_again(method):
    """Stored configs (job rows, checkpoint manifests) must re-validate unchanged."""
    config = parse_config({"method": method})
    assert JobConfig.model_validate(config.model_dump(mode="json")) == config


def test_finetune_never_aligns():
    assert parse_config({"method": "finetune", "alignment": {"epochs": 5}}).alignment_epochs == 0
    assert parse_config({"method": "orca", "alignment": {"epochs": 5}}).alignment_epochs == 5


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "a.yaml").write_text("method: orca\ntraining: {lr: 1.0e-3}\n")
    (tmp_path / "a.json").write_text(json.dumps({"method": "pare", "training": {"lr": 1e-3}}))
    assert load_config(tmp_path / "a.yaml").training.lr == 1e-3
    assert load_config(tmp_path / "a.json").method == "pare"
    (tmp_path / "bad.yaml").write_text("training: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_rest_request_maps_onto_the_same_sections():
    config = config_from_job_request("tiny-bert", {"type": "orca", "orca": {"alignment": {"epochs": 1},
                                                                            "training": {"epochs": 1, "batch_size": 8}}},
                                     seed=7)
    assert (config.method, config.body.name, config.training.seed, config.alignment.epochs) == ("orca", "tiny-bert", 7, 1)
    with pytest.raises(ConfigError) as caught:
        config_from_job_request("tiny-bert", {"type": "orca", "orca": {"training": {"lr": -1}}})
    assert caught.value.field == "method.orca.training.lr"
    with pytest.raises(ConfigError) as caught:
        config_from_job_request("tiny-bert", {"type": "nope"})
    assert caught.value.field == "method.type"
    with pytest.raises(ConfigError) as caught:
        config_from_job_request("tiny-bert", {"type": "orca", "pare": {}})
    assert caught.value.field == "method"


def test_config_imports_without_torch():
    code = "import core.config, core.errors, core.callbacks, core.data.validate, sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
