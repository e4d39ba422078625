"""Embedders follow the divisor rule; every head gives the task's shape; Swin takes the 2D embedder."""

import pytest
import torch

from core.config import TaskType, parse_config
from core.modeling.embedders import patch_size_2d, patch_stride_1d
from core.modeling.model import ModelSpec, apply_freeze, build_model


@pytest.mark.parametrize("length,target,positions,expected", [
    (64, 64, 512, 1), (100, 64, 512, 2), (1000, 64, 512, 20), (97, 64, 512, 97), (150, 64, 512, 3),
    (4096, 512, 128, 32),
])
def test_stride_is_smallest_divisor_fitting_the_tokens(length, target, positions, expected):
    stride = patch_stride_1d(length, target, positions)
    assert stride == expected
    assert length % stride == 0 and length // stride <= min(target, positions)
    assert all(length % s or length // s > min(target, positions) for s in range(1, stride))


def test_patch_size_2d_fits_positions():
    assert patch_size_2d(16, 16, 64, 512) == 2
    assert patch_size_2d(224, 224, 512, 512) == 11  # ceil(224/11)^2 = 441 <= 512 < ceil(224/10)^2 = 529
    p = patch_size_2d(224, 224, 512, 512)
    assert (-(-224 // p)) ** 2 <= 512 and (-(-224 // (p - 1))) ** 2 > 512


CASES = [
    (TaskType.classification, (1, 64), (), 3, (3,)),
    (TaskType.multilabel, (4, 100), (5,), None, (5,)),
    (TaskType.scalar_regression, (3, 30), (), None, ()),
    (TaskType.dense_regression, (1, 64), (64,), None, (64,)),
    (TaskType.dense_regression, (2, 16, 16), (16, 16), None, (16, 16)),
    (TaskType.dense_binary, (1, 15, 13), (1, 15, 13), None, (1, 15, 13)),
]


@pytest.mark.parametrize("task,input_shape,target_shape,classes,out_shape", CASES)
def test_heads_produce_task_shapes_on_text_body(task, input_shape, target_shape, classes, out_shape):
    model, _ = build_model(parse_config({"body": {"name": "tiny-bert"}}), ModelSpec(task, input_shape, target_shape, classes))
    assert model(torch.randn(2, *input_shape)).shape == (2, *out_shape)


def test_embedder_tokens_and_pretrained_positions():
    model, body = build_model(parse_config({"body": {"name": "tiny-bert"}, "embedder": {"target_seq_len": 32}}),
                              ModelSpec(TaskType.classification, (4, 100), (), 2))
    tokens, _ = model.embed(torch.randn(3, 4, 100))
    assert model.embedder.stride == 4 and tokens.shape == (3, 25, body.width)
    assert torch.equal(model.embedder.positions.data, body.source_embedding.position_embeddings.weight[:25])


@pytest.mark.parametrize("task,input_shape,target_shape,classes,out_shape", [
    (TaskType.classification, (1, 8, 8), (), 10, (10,)),
    (TaskType.dense_regression, (1, 16, 16), (16, 16), None, (16, 16)),
])
def test_swin_body_accepts_2d_embedder(task, input_shape, target_shape, classes, out_shape):
    model, body = build_model(parse_config({"body": {"name": "tiny-swin"}}), ModelSpec(task, input_shape, target_shape, classes))
    assert body.kind == "vision"
    source = body.source_embedding.patch_embeddings.projection.weight
    # pretrained RGB kernel tiled over the single input channel, scaled to keep the response
    assert torch.allclose(model.embedder.projection.weight[:, 0], source.sum(dim=1), atol=1e-6)
    assert model(torch.randn(2, *input_shape)).shape == (2, *out_shape)


def test_freeze_switches():
    model, _ = build_model(parse_config({"body": {"name": "tiny-bert"}}), ModelSpec(TaskType.classification, (1, 16), (), 2))
    apply_freeze(model, "body")
    assert all(p.requires_grad for p in model.embedder.parameters())
    assert not any(p.requires_grad for p in model.body.parameters())
    apply_freeze(model, "both")
    assert not any(p.requires_grad for p in model.embedder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
