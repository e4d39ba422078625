"""The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real API process on SQLite. No worker runs: the test plays the worker, claiming jobs and writing
their events, metric points and checkpoints straight into the store, so a running job's curve
grows exactly when the test appends points.

Screenshots go to $XMODAL_TEST_ARTIFACTS (default tests/artifacts/, not committed).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from store.blobs import BlobStore
from store.db import session_scope
from store.repositories import checkpoints, events, jobs, metrics
from store.repositories.metrics import NewPoint
from store.settings import Settings
from tests.service.api_fixtures import REPO_ROOT, auth, live_server, npz_bytes
from tests.service.conftest import make_owner_key
from tests.services import unavailable

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("XMODAL_TEST_ARTIFACTS") or REPO_ROOT / "tests" / "artifacts")
WORKER = "dashboard-test-worker"
WAIT_MS = 20_000


# ---- the test plays the worker ----------------------------------------------------------------
def submit(http: httpx.Client, suffix: str, method: str = "orca") -> str:
    """A real job through the API; with no worker it stays queued until `claim`."""
    upload = http.post("/v1/files", files={"file": ("train.npz", npz_bytes())}, data={"purpose": "fine-tune"})
    assert upload.status_code == 200, upload.text
    created = http.post("/v1/fine_tuning/jobs", json={"model": "tiny-bert", "training_file": upload.json()["id"],
                                                      "method": {"type": method}, "seed": 0, "suffix": suffix})
    assert created.status_code == 200, created.text
    return str(created.json()["id"])


def claim(job_id: str, total_steps: int) -> None:
    with session_scope() as session:
        assert jobs.claim(session, job_id, WORKER, lease_seconds=3600) is not None
        jobs.set_progress(session, job_id, WORKER, {"stage": "setup", "step": 0, "total_steps": total_steps,
                                                    "fraction": 0.0, "eta_seconds": None})


def event(job_id: str, stage: str, message: str, **data: Any) -> None:
    with session_scope() as session:
        events.append(session, job_id, stage=stage, message=message, data=data or None)


def points(job_id: str, key: str, split: str, steps: range, start: float = 2.0) -> None:
    with session_scope() as session:
        metrics.append_many(session, job_id, [NewPoint(key, start / (1 + 0.3 * step), step, split, step // 5)
                                              for step in steps])


def progress(job_id: str, stage: str, step: int, total: int) -> None:
    with session_scope() as session:
        jobs.set_progress(session, job_id, WORKER, {"stage": stage, "step": step, "total_steps": total,
                                                    "fraction": step / total, "eta_seconds": 42.0})


def checkpoint_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        manifest = json.dumps({"format": "xmodal-checkpoint", "note": "written by the dashboard test"}).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return buffer.getvalue()


def finish_with_checkpoint(job_id: str, settings: Settings, test_error: float) -> str:
    """A finished job: final test metrics, a final checkpoint blob and row, `succeeded`."""
    ref = BlobStore(settings.blob_root).write_stream([checkpoint_tar()])
    with session_scope() as session:
        metrics.append_many(session, job_id, [NewPoint("error", test_error, 20, "final_test"),
                                              NewPoint("loss", 0.5 + test_error, 20, "final_test")])
        row = checkpoints.create(session, job_id, step=20, epoch=4, stage="evaluate", sha256=ref.sha256,
                                 bytes=ref.size, metrics={"error": test_error}, final=True)
        events.append(session, job_id, stage="evaluate", message=f"checkpoint {row.id} saved at step 20",
                      data={"checkpoint": row.id, "step": 20, "final": True})
        summary = {"task": "classification", "steps": 20, "validation": {"error": 0.2}, "test": {"error": test_error}}
        baseline = {"method": "logistic_regression", "params": {"C": 0.1}, "metric": "error",
                    "selection": "error on the validation split", "validation": {"error": 0.125},
                    "test": {"error": 0.375}, "seconds": 0.5, "notes": ["stopped at 200 iterations"]}
        assert jobs.finish(session, job_id, WORKER, "succeeded", result={"checkpoint": row.id, "step": 20,
                                                                          "summary": summary, "baseline": baseline})
        return row.id


def run_to_the_end(job_id: str, settings: Settings, test_error: float) -> str:
    claim(job_id, 20)
    event(job_id, "setup", "claimed by the test")
    event(job_id, "refine", "refine: 4 epochs", stage_started="refine")
    points(job_id, "loss", "train", range(1, 21), start=2.5)
    points(job_id, "error", "validation", range(5, 21, 5), start=0.9)
    progress(job_id, "refine", 20, 20)
    return finish_with_checkpoint(job_id, settings, test_error)


# ---- the browser -----------------------------------------------------------------------------
@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    with live_server(tmp_path) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is absent: install Debian's chromium and chromium-driver (scripts/system-packages.sh)")
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("playwright is not installed: it is in the test extra, pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught exceptions of every page it watches, with the page's URL. Every
    console line and failed response is printed too: pytest shows them when a test fails."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda error: self._error(f"{page.url}: uncaught {error}"))
        page.on("response", lambda response: response.status >= 400 and print(f"HTTP {response.status} {response.url}"))
        return page

    def _console(self, page: Any, message: Any) -> None:
        line = f"{page.url}: console.{message.type}: {message.text} ({message.location.get('url')})"
        print(line)
        if message.type == "error":
            self.errors.append(line)

    def _error(self, line: str) -> None:
        print(line)
        self.errors.append(line)


def login(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_url("**/dashboard/login?next=*")
    page.fill("#api-key", key)
    page.click("#login-submit")
    page.wait_for_url(f"{url}/")


def chart_points(page: Any, key: str) -> int:
    return int(page.get_attribute(f'.chart[data-metric-key="{key}"]', "data-points"))


def wait_points(page: Any, key: str, count: int) -> None:
    page.wait_for_selector(f'.chart[data-metric-key="{key}"][data-points="{count}"]', timeout=WAIT_MS)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


@pytest.mark.integration
def test_dashboard_follows_a_running_job(server: str, settings: Settings, browser: Any) -> None:
    key = make_owner_key("alice").key
    with httpx.Client(base_url=server, headers=auth(key), timeout=30) as http:
        live, done = submit(http, "live-run"), submit(http, "finished-run", method="finetune")
    checkpoint_id = run_to_the_end(done, settings, test_error=0.25)
    claim(live, 40)
    event(live, "setup", "claimed by the test")
    event(live, "align", "align: otdd to proxy digits", stage_started="align")
    points(live, "otdd", "align", range(1, 5), start=8.0)
    event(live, "refine", "refine: 8 epochs", stage_started="refine")
    points(live, "loss", "train", range(5, 15))  # 10 points
    points(live, "error", "validation", range(5, 15, 5), start=0.9)
    progress(live, "refine", 14, 40)

    console = Console()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = console.watch(context.new_page())
    login(page, server, key)

    # jobs table
    page.wait_for_selector(f'tr[data-job-id="{live}"][data-status="running"]', timeout=WAIT_MS)
    page.wait_for_selector(f'tr[data-job-id="{done}"][data-status="succeeded"]', timeout=WAIT_MS)
    live_row = page.locator(f'tr[data-job-id="{live}"]')
    assert "orca" in live_row.inner_text() and "tiny-bert" in live_row.inner_text()
    assert live_row.locator(".progress").get_attribute("data-fraction") == str(14 / 40)
    screenshot(page, "dashboard-jobs.png")

    # the running job's page: curves, stages, events; then the curve grows
    page.click(f'a[href="/dashboard/jobs/{live}"]')
    page.wait_for_url(f"**/dashboard/jobs/{live}")
    wait_points(page, "loss", 10)
    wait_points(page, "otdd", 4)
    wait_points(page, "error", 2)
    assert page.get_attribute('.chart[data-metric-key="loss"]', "data-series") == "train"
    assert page.locator('.chart[data-metric-key="loss"] canvas').count() == 1  # uPlot drew it
    stages = page.locator("#timeline .stage").evaluate_all("nodes => nodes.map(node => node.dataset.stage)")
    assert stages == ["setup", "align", "refine"]
    assert page.locator("#events tbody tr").count() == 3
    streams = any(path.endswith("/metrics/stream") for path in httpx.get(f"{server}/openapi.json").json()["paths"])
    page.wait_for_selector(f'#page[data-live="{"stream" if streams else "polling"}"]', timeout=WAIT_MS)

    points(live, "loss", "train", range(15, 20))
    event(live, "refine", "epoch 3 done")
    progress(live, "refine", 19, 40)
    wait_points(page, "loss", 15)
    page.wait_for_function("document.querySelectorAll('#events tbody tr').length === 4", timeout=WAIT_MS)
    page.wait_for_selector('#job-progress[data-fraction="0.475"]', timeout=WAIT_MS)
    job_shot = screenshot(page, "dashboard-job.png")

    # the finished job's page: final metrics, a checkpoint to download
    page.goto(f"{server}/dashboard/jobs/{done}")
    wait_points(page, "loss", 20)
    page.wait_for_selector("#final-metrics td", timeout=WAIT_MS)
    assert "0.25" in page.inner_text("#final-metrics")
    stages = page.locator("#timeline .stage").evaluate_all("nodes => nodes.map(node => node.dataset.stage)")
    assert stages == ["setup", "refine", "evaluate"]
    # beside the final metrics, the job's classical baseline: which is better on test, and on validation
    page.wait_for_selector('#baseline-section[data-better="model"]', timeout=WAIT_MS)
    assert page.inner_text("#baseline-verdict") == "The model beats the baseline on test error: model 0.2500, baseline 0.3750."
    assert page.locator("#baseline tr.baseline-baseline td").all_inner_texts() == [
        "baseline: logistic_regression (C=0.1)", "0.1250", "0.3750"]
    assert page.locator("#baseline tr.baseline-model td").all_inner_texts() == ["model", "0.2000", "0.2500"]
    assert page.locator("#baseline th").all_inner_texts() == ["", "validation error", "test error"]
    # marked better: the model on test, the baseline on validation
    assert page.locator("#baseline tr.baseline-model td.better").all_inner_texts() == ["0.2500"]
    assert page.locator("#baseline tr.baseline-baseline td.better").all_inner_texts() == ["0.1250"]
    assert "selected by error on the validation split" in page.inner_text("#baseline-notes")
    screenshot(page, "dashboard-job-baseline.png")
    with page.expect_download(timeout=WAIT_MS) as downloading:
        page.click(f'button.download[data-checkpoint-id="{checkpoint_id}"]')
    assert downloading.value.suggested_filename == f"{checkpoint_id}.tar"
    assert Path(downloading.value.path()).read_bytes() == checkpoint_tar()

    # comparison: pick both on the jobs page, overlay their losses, a table of test metrics
    page.goto(f"{server}/")
    for job_id in (live, done):
        page.check(f'tr[data-job-id="{job_id}"] input[type="checkbox"]')
    page.click("#compare-selected")
    page.wait_for_url("**/dashboard/compare?jobs=*")
    wait_points(page, "loss", 15 + 20)
    series = page.get_attribute('.chart[data-metric-key="loss"]', "data-series")
    assert series == "live-run (orca),finished-run (finetune)"
    page.wait_for_selector(f'#compare-table tr[data-job-id="{done}"]', timeout=WAIT_MS)
    assert "0.25" in page.inner_text(f'#compare-table tr[data-job-id="{done}"]')
    screenshot(page, "dashboard-compare.png")

    # the same live page where the server has no stream route: it polls `?after=` instead
    page.route("**/openapi.json", lambda route: route.fulfill(json={"paths": {}}))
    page.goto(f"{server}/dashboard/jobs/{live}")
    wait_points(page, "loss", 15)
    page.wait_for_selector('#page[data-live="polling"]', timeout=WAIT_MS)
    points(live, "loss", "train", range(20, 23))
    wait_points(page, "loss", 18)

    context.close()
    assert console.errors == [], "\n".join(console.errors)
    print(f"\nscreenshot: {job_shot}")


@pytest.mark.integration
def test_experiment_page_shows_mean_and_std_per_cell(server: str, settings: Settings, browser: Any) -> None:
    key = make_owner_key("alice").key
    with httpx.Client(base_url=server, headers=auth(key), timeout=30) as http:
        upload = http.post("/v1/files", files={"file": ("train.npz", npz_bytes())}, data={"purpose": "fine-tune"})
        created = http.post("/v1/experiments", json={
            "model": "tiny-bert", "training_file": upload.json()["id"], "name": "orca-vs-finetune",
            "method": {"type": "orca"}, "grid": {"methods": ["orca", "finetune"], "seeds": [0, 1]}})
        assert created.status_code == 200, created.text
        experiment = created.json()
    errors = {("orca", 0): 0.2, ("orca", 1): 0.3, ("finetune", 0): 0.4}  # finetune seed 1 stays queued
    for cell in experiment["cells"]:
        for job in cell["jobs"]:
            if (cell["params"]["method"], job["seed"]) in errors:
                run_to_the_end(job["id"], settings, errors[(cell["params"]["method"], job["seed"])])

    console = Console()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = console.watch(context.new_page())
    login(page, server, key)
    page.wait_for_selector("#experiments-body tr", timeout=WAIT_MS)
    page.click(f'a[href="/dashboard/experiments/{experiment["id"]}"]')
    page.wait_for_selector('.chart[data-metric-key="experiment"][data-points="2"]', timeout=WAIT_MS)
    rows = page.locator("#experiment-table tbody tr").all_inner_texts()
    assert len(rows) == 2
    assert "0.2500 ± 0.07071" in rows[0] and "0.4000" in rows[1] and "±" not in rows[1]
    screenshot(page, "dashboard-experiment.png")
    context.close()
    assert console.errors == [], "\n".join(console.errors)


@pytest.mark.integration
def test_login_refuses_a_bad_key_and_pages_ask_for_one(server: str, browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/dashboard/compare?jobs=x")
    page.wait_for_url("**/dashboard/login?next=%2Fdashboard%2Fcompare%3Fjobs%3Dx")
    page.fill("#api-key", "xm-not-a-key")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])", timeout=WAIT_MS)
    assert "not valid" in page.inner_text("#login-error")
    assert page.evaluate("sessionStorage.length") == 0
    context.close()


# ---- no browser: what the server sends ------------------------------------------------------------
def test_pages_say_so_when_the_chart_library_was_not_vendored(settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.dashboard.routes.VENDOR_DIR", tmp_path / "empty")
    with TestClient(create_app()) as client:
        page = client.get("/")
    assert page.status_code == 200
    assert 'id="chart-library-missing"' in page.text and "make install" in page.text
    assert "uPlot" not in page.text.replace("copies uPlot", "")  # no script tag that would 404


def test_pages_are_shells_without_secrets_behind_a_strict_policy(settings: Settings) -> None:
    with TestClient(create_app()) as client:
        for path in ("/", "/dashboard/login", "/dashboard/jobs/ftjob-x", "/dashboard/compare",
                     "/dashboard/experiments/exp-x"):
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert "Bearer xm-" not in page.text
        assert client.get("/dashboard/jobs/%3Cscript%3E").status_code == 422
        assert client.get("/dashboard/static/js/api.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/dashboard/static/../routes.py").status_code == 404
        assert client.get("/dashboard/static/%2e%2e/routes.py").status_code == 404
        assert not [path for path in client.get("/openapi.json").json()["paths"] if not path.startswith(("/v1", "/healthz", "/readyz", "/metrics"))]
