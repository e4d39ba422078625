"""What a test does when something it needs is missing: a service (PostgreSQL, Redis), a browser, a
package or Debian data.

On a developer's machine it skips. `make test` (and so `.ci/run`) sets XMODAL_TEST_REQUIRE_SERVICES=1,
and there it fails: a refused login or an absent package must never turn into a green run that
tested nothing.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_SERVICES = "XMODAL_TEST_REQUIRE_SERVICES"


def services_required() -> bool:
    """XMODAL_TEST_REQUIRE_SERVICES: unset or `0` skips, `1` fails; anything else is a usage error."""
    value = os.environ.get(REQUIRE_SERVICES, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{REQUIRE_SERVICES} must be 0 or 1, not {value!r}")
    return value == "1"


def unavailable(what: str) -> NoReturn:
    """Fail (services required) or skip (a developer's run) the current test, saying what is missing."""
    if services_required():
        pytest.fail(f"{what}; {REQUIRE_SERVICES}=1 (make test) requires it", pytrace=False)
    pytest.skip(f"{what} (under make test, {REQUIRE_SERVICES}=1, this fails)")
