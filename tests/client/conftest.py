"""Fixtures for the client's tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry loop's sleeps, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr("client.http.sleep", recorded.append)
    return recorded
