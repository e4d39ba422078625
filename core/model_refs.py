"""Which `model` names a deployment lets a job load, decided without torch so the API can ask.

A body is loaded from whatever directory `model` names, so a service must not take arbitrary
paths: one could read any model-shaped directory on the server. A name is allowed when it is a
built-in alias, a hub name the deployment lists, or an existing directory inside a model root once
symlinks and `..` are resolved. The CLI, running a user's own job file, does not ask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from core.errors import ConfigError

BODY_ALIASES = ("minilm-l6", "tiny-bert", "tiny-swin")
"""The names core.bodies resolves without a directory or hub (tests keep the two in step)."""


class ModelNotAllowed(ConfigError):
    code = "model_not_allowed"


def check_model_allowed(name: str, model_roots: Iterable[Path], allowed_hub_models: Iterable[str]) -> None:
    """Raise ModelNotAllowed unless `name` is an alias, an allowed hub name or a directory under a root."""
    if name in BODY_ALIASES or name in allowed_hub_models or _under_a_root(name, model_roots):
        return
    raise ModelNotAllowed(
        f"{name!r} is not allowed here: use an alias ({', '.join(BODY_ALIASES)}), an allowed hub model "
        "or an absolute path to a model directory under the deployment's model roots", field="model")


def _under_a_root(name: str, model_roots: Iterable[Path]) -> bool:
    path = Path(name)
    if not path.is_absolute():  # relative to what? the API's and the worker's working directories differ
        return False
    try:
        resolved = path.resolve(strict=True)
        roots = [Path(root).resolve() for root in model_roots]
    except (OSError, ValueError, RuntimeError):  # missing, unreadable, NUL byte, symlink loop
        return False
    return resolved.is_dir() and any(resolved.is_relative_to(root) for root in roots)
