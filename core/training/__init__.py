"""Training machinery shared by every recipe: context, optimizers, refine loop, evaluation, state."""
