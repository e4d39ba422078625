"""Errors are values with a code and a field, raised where detected and translated once at the edge.

`UserError` subclasses mean the user's data or config is at fault (HTTP 4xx, job `failed` with a
user error); anything else escaping core is an internal fault.
"""

from __future__ import annotations


class XModalError(Exception):
    """Base of every error core raises on purpose."""

    code = "xmodal_error"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": str(self), "param": self.field}


class UserError(XModalError):
    """The user's input (config, dataset, checkpoint path) is wrong; retrying will not help."""

    code = "user_error"


class ConfigError(UserError):
    code = "invalid_config"


class DatasetError(UserError):
    code = "invalid_dataset"


class CheckpointError(UserError):
    code = "invalid_checkpoint"
