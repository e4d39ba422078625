"""xmodal core: the cross-modal fine-tuning library (config, data, models, alignment, methods, loop).

Importing `core` (and `core.config`, `core.errors`, `core.data.validate`) never imports torch, so the
API process stays light; the torch-backed entry points below load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from core.checkpoint import load_checkpoint
    from core.runner import run

__all__ = ["load_checkpoint", "run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from core.runner import run

        return run
    if name == "load_checkpoint":
        from core.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(name)
