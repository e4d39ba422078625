"""Which `model` names and proxy files a deployment lets a job load, decided without torch so the
API can ask before queueing and the worker again before loading.

A body is loaded from whatever directory `model` names, so a service must not take arbitrary
paths: one could read any model-shaped directory on the server. A name is allowed when it is a
built-in alias, a hub name the deployment lists, or an existing directory inside a model root once
symlinks and `..` are resolved. A proxy that names a file (`*.npz`, `cifar10:PATH`,
`conll2003:PATH`) must likewise lie inside a model root. The CLI, running a user's own job file,
does not ask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from core.errors import ConfigError

BODY_ALIASES = ("minilm-l6", "tiny-bert", "tiny-swin")
"""The names core.modeling.bodies resolves without a directory or hub (tests keep the two in step)."""


PATH_PROXY_PREFIXES = ("cifar10:", "conll2003:")


class ModelNotAllowed(ConfigError):
    code = "model_not_allowed"


class ProxyNotAllowed(ConfigError):
    code = "proxy_not_allowed"


def check_job_allowed(model: str, proxy: str, model_roots: Iterable[Path], allowed_hub_models: Iterable[str]) -> None:
    """Both checks a service makes on a job: its model and its proxy."""
    check_model_allowed(model, model_roots, allowed_hub_models)
    check_proxy_allowed(proxy, model_roots)


def check_model_allowed(name: str, model_roots: Iterable[Path], allowed_hub_models: Iterable[str]) -> None:
    """Raise ModelNotAllowed unless `name` is an alias, an allowed hub name or a directory under a root."""
    if name in BODY_ALIASES or name in allowed_hub_models or _under_a_root(name, model_roots):
        return
    raise ModelNotAllowed(
        f"{name!r} is not allowed here: use an alias ({', '.join(BODY_ALIASES)}), an allowed hub model "
        "or an absolute path to a model directory under the deployment's model roots", field="model")


def check_proxy_allowed(proxy: str, model_roots: Iterable[Path]) -> None:
    """Raise ProxyNotAllowed when the proxy names a file or folder outside every model root."""
    prefix = next((p for p in PATH_PROXY_PREFIXES if proxy.startswith(p)), None)
    if prefix is None and not proxy.endswith(".npz"):
        return  # a built-in proxy name (or an unknown one, which core rejects by name)
    path = proxy.removeprefix(prefix) if prefix else proxy
    if not _under_a_root(path, model_roots, directory=prefix is not None):
        raise ProxyNotAllowed(f"proxy path {path!r} is not allowed here: it must be an absolute path "
                              "under the deployment's model roots", field="alignment.proxy")


def _under_a_root(name: str, model_roots: Iterable[Path], directory: bool = True) -> bool:
    path = Path(name)
    if not path.is_absolute():  # relative to what? the API's and the worker's working directories differ
        return False
    try:
        resolved = path.resolve(strict=True)
        roots = [Path(root).resolve() for root in model_roots]
    except (OSError, ValueError, RuntimeError):  # missing, unreadable, NUL byte, symlink loop
        return False
    kind_ok = resolved.is_dir() if directory else resolved.is_file()
    return kind_ok and any(resolved.is_relative_to(root) for root in roots)
