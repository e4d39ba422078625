"""Training machinery shared by every recipe: the run, random streams, optimizers, refine loop, evaluation, state."""
