"""The real all-MiniLM-L6-v2 body on the real DNA data (Oct4 vs MafK), for a few steps."""

import pytest

import core
from core.config import parse_config
from core.data.fetch import fetch_dataset


@pytest.mark.slow
def test_orca_minilm_on_dna(tmp_path):
    data = tmp_path / "dna.npz"
    info = fetch_dataset("dna-oct4-mafk", data)
    assert info.input_shape[0] == 4
    config = parse_config({"method": "orca", "body": {"name": "minilm-l6"},
                           "alignment": {"objective": "otdd_gaussian", "epochs": 2, "maxsamples": 32,
                                         "proxy": "wordnet", "proxy_samples": 500},
                           "training": {"epochs": 1, "max_steps": 4, "batch_size": 16, "lr": 1e-4}})
    result = core.run(config, data, tmp_path / "run")
    assert result.reason == "completed" and result.step == 6
    assert 0 <= result.summary["test"]["error"] <= 1
