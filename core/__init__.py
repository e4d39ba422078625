"""xmodal core: the cross-modal fine-tuning library (config, data, models, alignment, methods, loop).

Importing `core` (and `core.config`, `core.errors`, `core.data.validate`) never imports torch, so the
API process stays light; the torch-backed entry points below load on first use.

Adding a method
---------------
A method is one recipe file; nothing else in xmodal names it. In that file (torch-free at import):

1. Declare the method's own config section, if it has one: a `core.sections.Section` subclass.
2. Write each stage before refine as a function of the run (`core.training.run.Run`): track the
   state to checkpoint (`run.track_state`), `run.enter_stage(name, message)`, loop while
   `run.position.stage_epoch` is below the stage's epochs and `not run.out_of_time()` (a time budget's
   deadline ends the stage like its last epoch), call `run.step_done()` after every
   optimizer step, `run.finish_epoch()` after every epoch, and `run.save_checkpoint()` at the end.
   Draw randomness only from `run.epoch_generator` / `run.batch_generator`. Import torch and the
   components inside the function.
3. `register(Recipe(name, stages=(RecipeStage(stage, function, steps),), refine=..., sections={key:
   Section}))` from `core.methods`; `steps(config, train_size)` counts the stage's optimizer steps
   (0 skips it), and `refine` (default: plain fine-tuning) runs last.

Importing the file registers the method: `core.config` then accepts `method: <name>` and the
section under its key, the API and worker run it, and its stages are reported by name. A built-in
recipe is imported by `core.methods`; `tests/service/test_toy_method.py` registers one from a test file.
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
