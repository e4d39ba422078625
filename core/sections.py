"""The base of every job-config section, shared by `core.config` and the recipes' own sections.

Its own module, torch-free, so that a recipe file can declare its section without importing the
job config that is assembled from the recipes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Forbids unknown keys, so a typo is an error naming the field rather than an ignored setting."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
