"""Per-task losses, lower-is-better metrics (NAS-Bench-360 convention) and prediction decoding."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from core.config import TaskType


def relative_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ||prediction - target|| / ||target|| (the FNO / PDE convention)."""
    diff = (prediction - target).flatten(1).norm(dim=1)
    return (diff / target.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()


def task_loss(task: TaskType, output: torch.Tensor, target: torch.Tensor,
              target_mean: float, target_std: float) -> torch.Tensor:
    """Training loss on raw model output; regression outputs are in normalised target units."""
    if task == TaskType.classification:
        return F.cross_entropy(output.float(), target)
    if task in (TaskType.multilabel, TaskType.dense_binary):
        return F.binary_cross_entropy_with_logits(output.float(), target.float())
    if task == TaskType.dense_regression:
        return relative_l2(output.float() * target_std + target_mean, target)
    return F.mse_loss(output.float(), (target - target_mean) / target_std)


def decode(task: TaskType, output: torch.Tensor, target_mean: float, target_std: float) -> torch.Tensor:
    """Model output -> what `predict` returns: class ids, probabilities or de-normalised values."""
    if task == TaskType.classification:
        return output.argmax(dim=-1)
    if task in (TaskType.multilabel, TaskType.dense_binary):
        return torch.sigmoid(output.float())
    return output.float() * target_std + target_mean


def _safe_auroc(target: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(target, score)) if len(np.unique(target)) == 2 else float("nan")


def compute_metrics(task: TaskType, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Metrics from decoded predictions; every value is lower-is-better."""
    if task == TaskType.classification:
        return {"error": float(np.mean(prediction != target)),
                "f1_error": 1.0 - float(f1_score(target, prediction, average="macro"))}
    if task == TaskType.multilabel:
        aurocs = [_safe_auroc(target[:, k], prediction[:, k]) for k in range(target.shape[1])]
        valid = [k for k in range(target.shape[1]) if len(np.unique(target[:, k])) == 2]
        aps = [average_precision_score(target[:, k], prediction[:, k]) for k in valid]
        return {"auroc_error": 1.0 - float(np.nanmean(aurocs)) if valid else float("nan"),
                "map_error": 1.0 - float(np.mean(aps)) if aps else float("nan")}
    if task == TaskType.dense_binary:
        return {"auroc_error": 1.0 - _safe_auroc(target.reshape(-1), prediction.reshape(-1))}
    if task == TaskType.dense_regression:
        pred, true = torch.from_numpy(prediction).double(), torch.from_numpy(target).double()
        nrmse = (pred - true).norm() / true.norm().clamp_min(1e-12)
        return {"relative_l2": float(relative_l2(pred, true)), "nrmse": float(nrmse)}
    ss_res = float(np.sum((prediction - target) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2)) or 1e-12
    return {"mae": float(np.mean(np.abs(prediction - target))), "r2_error": ss_res / ss_tot}
