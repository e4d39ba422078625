"""Evaluation: decoded predictions and lower-is-better metrics on one split."""

from __future__ import annotations

import numpy as np
import torch

from core.data.prepare import Split
from core.modeling.model import CrossModalModel
from core.modeling.tasks import compute_metrics, decode
from core.config import TaskType


@torch.no_grad()
def predict_split(model: CrossModalModel, split: Split, task: TaskType, y_mean: float, y_std: float,
                  device: torch.device, batch_size: int, autocast: torch.autocast) -> np.ndarray:
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(split), batch_size):
        with autocast:
            output = model(split.x[start:start + batch_size].to(device, non_blocking=True))
        outputs.append(decode(task, output, y_mean, y_std).cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy()


def evaluate_split(model: CrossModalModel, split: Split, task: TaskType, y_mean: float, y_std: float,
                   device: torch.device, batch_size: int, autocast: torch.autocast) -> dict[str, float]:
    prediction = predict_split(model, split, task, y_mean, y_std, device, batch_size, autocast)
    return compute_metrics(task, prediction, split.y.numpy())
