"""The service tests' database fixtures, for the dashboard's tests (imported, not copied)."""

from tests.service.conftest import data_dir, settings  # noqa: F401  (pytest finds fixtures by name here)
