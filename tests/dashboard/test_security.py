"""The dashboard's origin keeps the key: login's `next` cannot send the browser elsewhere, and
`/docs` runs only our own scripts, in a tab that cannot read the key (issue 12, findings 7 and 9).
Browser tests use headless Chromium against a real API process, like test_dashboard.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from store.settings import Settings
from tests.dashboard.test_dashboard import WAIT_MS, Console, browser, login, server  # noqa: F401  (fixtures)
from tests.service.conftest import make_owner_key

OFF_ORIGIN_NEXT = ["/\\evil.example/x", "/%5Cevil.example/x", "/%09/evil.example/x", "//evil.example/x",
                   "https://evil.example/x", "javascript:alert(document.domain)", "/%2F/evil.example/x", "/.//evil.example/",
                   "/dashboard/../v1/files", "/dashboard/static/js/api.js", "/docs"]
"""Each as written into the login URL's query string (so `%5C` reaches the page as a backslash)."""


def fence(context: Any, origin: str) -> list[str]:
    """Answer every request for another origin with a stub page, so that nothing leaves the
    machine and a redirect there completes; returns the list of such requests as they happen."""
    left: list[str] = []

    def elsewhere(route: Any) -> None:
        left.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p id=evil>not our origin</p>")

    context.route(lambda url: not url.startswith(f"{origin}/"), elsewhere)
    return left


def log_in_with_next(page: Any, url: str, key: str, raw_next: str) -> None:
    page.goto(f"{url}/dashboard/login?next={raw_next}")
    page.fill("#api-key", key)
    page.click("#login-submit")
    page.wait_for_url(lambda now: not now.startswith(f"{url}/dashboard/login"), timeout=WAIT_MS)
    page.wait_for_load_state()


@pytest.mark.integration
def test_login_sends_the_browser_only_to_our_own_pages(server: str, browser: Any) -> None:
    key = make_owner_key("alice").key
    context = browser.new_context()
    left = fence(context, server)
    dialogs: list[str] = []
    landed: dict[str, str] = {}
    for raw_next in OFF_ORIGIN_NEXT:
        page = context.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        log_in_with_next(page, server, key, raw_next)
        landed[raw_next] = page.url
        page.close()
    assert landed == {raw_next: f"{server}/" for raw_next in OFF_ORIGIN_NEXT}
    page = context.new_page()  # a page of ours, with its query, is still where login goes
    log_in_with_next(page, server, key, quote("/dashboard/compare?jobs=a,b#curves", safe=""))
    assert page.url == f"{server}/dashboard/compare?jobs=a,b#curves"
    context.close()
    assert left == [] and dialogs == []


@pytest.mark.integration
def test_docs_open_in_a_tab_without_the_key_and_run_only_our_scripts(server: str, browser: Any) -> None:
    key = make_owner_key("alice").key
    console = Console()
    context = browser.new_context()
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    left = fence(context, server)
    page = console.watch(context.new_page())
    login(page, server, key)
    assert page.evaluate("sessionStorage.length") == 1  # the dashboard's tab holds the key

    with context.expect_page(timeout=WAIT_MS) as opening:
        page.click("#api-docs")
    docs = console.watch(opening.value)
    docs.wait_for_selector(".swagger-ui .opblock", timeout=WAIT_MS)  # Swagger UI ran and read /openapi.json
    assert docs.url == f"{server}/docs"
    assert docs.evaluate("sessionStorage.length") == 0 and docs.evaluate("window.opener === null")
    assert page.evaluate("sessionStorage.length") == 1

    # Why the link's rel matters: a tab the dashboard opens *with* an opener gets a copy of its
    # sessionStorage, key included (this is the browser's behaviour the link must avoid).
    with context.expect_page(timeout=WAIT_MS) as opening:
        page.evaluate("window.open('/docs', '_blank')")
    assert opening.value.evaluate("sessionStorage.length") == 1

    context.close()
    assert left == [], f"requests left the origin: {left}"
    assert f"{server}/dashboard/static/vendor/swagger-ui/swagger-ui-bundle.js" in requested
    assert console.errors == [], "\n".join(console.errors)  # a script the policy blocked is an error here


# ---- no browser: what /docs sends --------------------------------------------------------------
ATTRIBUTE_URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']*)["']""")


def test_docs_reference_only_our_origin_under_a_policy(settings: Settings) -> None:
    with TestClient(create_app()) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert not re.search(r"https?:|//[a-z]", page.text, re.IGNORECASE), page.text  # no other origin, no CDN
        policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert re.fullmatch(r"'self' 'sha256-[A-Za-z0-9+/]+=*'", policy["script-src"]), policy
        assert policy["default-src"] == "'self'" and policy["connect-src"] == "'self'"
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assets = [url for url in ATTRIBUTE_URL.findall(page.text) if not url.startswith("data:")]
        assert len(assets) == 2, assets  # Swagger UI's script and style sheet
        for asset in assets:
            assert asset.startswith("/") and not urlsplit(asset).netloc, asset
            fetched = client.get(asset)
            assert fetched.status_code == 200 and fetched.content, asset
            assert fetched.headers["content-type"].startswith(("text/javascript", "text/css")), asset
        assert client.get("/openapi.json").status_code == 200
        for cdn_page in ("/redoc", "/docs/oauth2-redirect"):  # FastAPI's own pages are off
            assert client.get(cdn_page).status_code == 404, cdn_page


def test_docs_say_how_to_install_swagger_ui_when_it_was_not_vendored(settings: Settings, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.dashboard.docs.SWAGGER_DIR", tmp_path / "empty")
    with TestClient(create_app()) as client:
        page = client.get("/docs")
    assert page.status_code == 503
    error = page.json()["error"]
    assert error["code"] == "docs_unavailable" and "make vendor" in error["message"]
