"""`xmodal files …` / `xmodal jobs …` in-process, against the stand-in server: output, --json, exit
codes, and failures as one line instead of a traceback."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.main import main
from client import Job
from client.display import StatusLine, job_line, outcome
from tests.client.fakes import Server, error, file_json, job_json, page_json


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the CLI at a stand-in server; polls do not sleep."""
    monkeypatch.setattr("client.jobs.sleep", lambda seconds: None)

    def install(*responses: Any) -> Server:
        server = Server(*responses)
        monkeypatch.setattr("client.commands.make_client", lambda args: server.client())
        return server

    return install


def test_connection_refused_is_one_line_naming_the_url(capsys: pytest.CaptureFixture[str],
                                                       sleeps: list[float]) -> None:
    with socket.socket() as bound_not_listening:  # holds the port, refuses connections
        bound_not_listening.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}"
        assert main(["jobs", "list", "--base-url", url, "--api-key", "xm-x"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"xmodal: cannot reach {url}: connection refused; retrying in {sleeps[0]:.1f} s",
        f"xmodal: cannot reach {url}: connection refused; retrying in {sleeps[1]:.1f} s",
        f"xmodal: error: cannot reach {url}: connection refused",
    ]


def test_a_missing_api_key_says_where_to_get_one(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XMODAL_API_KEY", raising=False)
    assert main(["files", "list"]) == 1
    assert "no API key: set XMODAL_API_KEY" in capsys.readouterr().err


def test_an_api_error_is_its_message_and_code(serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    serve(error(404, "job_not_found", "no job with id 'ftjob-x'"))
    assert main(["jobs", "get", "ftjob-x"]) == 1
    assert capsys.readouterr().err == "xmodal: error: no job with id 'ftjob-x' (404 job_not_found)\n"


def test_a_missing_local_file_is_named(serve: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    serve(httpx.Response(200, json=file_json()))
    assert main(["files", "upload", str(tmp_path / "nope.npz")]) == 1
    assert capsys.readouterr().err == f"xmodal: error: {tmp_path / 'nope.npz'}: No such file or directory\n"


def test_files_list_as_a_table_and_as_json(serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    serve(httpx.Response(200, json=page_json([file_json(), file_json(id="file-2", filename="b.npz")],
                                             has_more=True)))
    assert main(["files", "list", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "FILENAME", "SIZE", "STATUS", "CREATED"]
    assert lines[2].split()[:4] == ["file-2", "b.npz", "1.2", "KiB"] and lines[-1] == "(more: --after file-2)"
    assert main(["files", "list", "--json"]) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["has_more"] is True and [f["id"] for f in page["data"]] == ["file-1", "file-2"]


def test_jobs_create_takes_method_sections_from_a_job_file(serve: Any, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("method: pare\nbody: {name: tiny-bert}\ntraining: {epochs: 1, batch_size: 8}\n")
    server = serve(httpx.Response(200, json=job_json()))
    assert main(["jobs", "create", "--training-file", "file-1", "--config", str(config), "--seed", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "ftjob-1"
    assert json.loads(server.requests[0].content) == {
        "training_file": "file-1", "model": "tiny-bert", "seed": 3,
        "method": {"type": "pare", "pare": {"body": {"name": "tiny-bert"}, "training": {"epochs": 1, "batch_size": 8}}},
    }


def test_jobs_create_needs_a_model_and_a_readable_config(serve: Any, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    serve(httpx.Response(200, json=job_json()))
    assert main(["jobs", "create", "--training-file", "file-1"]) == 1
    assert "no model: pass --model" in capsys.readouterr().err
    broken = tmp_path / "job.yaml"
    broken.write_text("training: {epochs: 1\n")
    assert main(["jobs", "create", "--training-file", "file-1", "--model", "tiny-bert", "--config", str(broken)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"xmodal: error: {broken}: not valid YAML") and err.count("\n") == 1


def running(step: int, **fields: Any) -> httpx.Response:
    return httpx.Response(200, json=job_json(status="running", started_at=1_700_000_000, progress={
        "stage": "refine", "step": step, "total_steps": 40, "fraction": step / 40, "eta_seconds": 80.0}, **fields))


def loss_page(value: float, point_id: int) -> httpx.Response:
    return httpx.Response(200, json=page_json([{"id": point_id, "key": "loss", "value": value, "step": point_id,
                                                "epoch": 0, "split": "train", "created_at": 0}]))


def test_watch_prints_a_line_per_change_off_a_tty_and_exits_0_on_success(
        serve: Any, capsys: pytest.CaptureFixture[str]) -> None:
    done = httpx.Response(200, json=job_json(status="succeeded", started_at=1_700_000_000,
                                             finished_at=1_700_000_095, result={"checkpoint": "ftckpt-1"}))
    server = serve(running(10), loss_page(0.75, 1), running(20), loss_page(0.5, 2), done,
                   httpx.Response(200, json=page_json([])))
    assert main(["jobs", "watch", "ftjob-1", "--interval", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "ftjob-1 running refine [#####---------------] 10/40 25% loss 0.75 ETA 1m20s",
        "ftjob-1 running refine [##########----------] 20/40 50% loss 0.5 ETA 1m20s",
        "ftjob-1 succeeded loss 0.5",
    ]
    assert captured.out == "ftjob-1 succeeded in 1m35s; checkpoint ftckpt-1\n"
    metric_queries = [dict(r.url.params) for r in server.requests if r.url.path.endswith("/metrics")]
    assert metric_queries[1] == {"key": "loss", "split": "train", "after": "1", "limit": "100"}


BASELINE = {"method": "logistic_regression", "params": {"C": 0.1}, "metric": "error", "selection": "error on the "
            "validation split", "validation": {"error": 0.1}, "test": {"error": 0.25}, "seconds": 0.4, "notes": []}


def test_the_outcome_sets_the_model_beside_its_baseline() -> None:
    result = {"checkpoint": "ftckpt-1", "summary": {"test": {"error": 0.125}}, "baseline": BASELINE}
    job = Job.from_dict(job_json(status="succeeded", result=result))
    assert job.baseline is not None and job.baseline.params == {"C": 0.1} and job.baseline.test == {"error": 0.25}
    assert outcome(job) == ("ftjob-1 succeeded; checkpoint ftckpt-1; test error 0.125 vs baseline "
                            "logistic_regression 0.25 (model better)")
    worse = Job.from_dict(job_json(status="succeeded", result={**result, "summary": {"test": {"error": 0.5}}}))
    assert outcome(worse).endswith("(baseline better)")
    assert Job.from_dict(job_json(status="succeeded", result={"checkpoint": "ftckpt-1"})).baseline is None


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_watch_exits_1_when_the_job_did_not_succeed(serve: Any, capsys: pytest.CaptureFixture[str],
                                                    status: str) -> None:
    failure = {"code": "invalid_dataset", "message": "y: labels out of range", "param": "y"}
    serve(httpx.Response(200, json=job_json(status=status, error=failure if status == "failed" else None)),
          httpx.Response(200, json=page_json([])))
    assert main(["jobs", "watch", "ftjob-1", "--json"]) == 1
    job = json.loads(capsys.readouterr().out)
    assert job["status"] == status and (status == "cancelled" or job["error"]["code"] == "invalid_dataset")


def test_download_reports_the_file_and_its_resume(serve: Any, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import hashlib

    content = b"tar bytes" * 100
    sha = hashlib.sha256(content).hexdigest()
    (tmp_path / "out.tar.part").write_bytes(content[:50])
    serve(httpx.Response(206, content=content[50:], headers={
        "ETag": f'"{sha}"', "Content-Range": f"bytes 50-{len(content) - 1}/{len(content)}"}))
    assert main(["jobs", "download", "ftjob-1", "--checkpoint", "ftckpt-1", "-o", str(tmp_path / "out.tar"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"path": str(tmp_path / "out.tar"), "bytes": 900, "sha256": sha, "resumed_from": 50}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_tty_the_status_line_is_redrawn_in_place() -> None:
    terminal = Terminal()
    line = StatusLine(terminal)
    line.update("one")
    line.update("one")
    line.update("two")
    line.close()
    assert terminal.getvalue() == "\rone\x1b[K\rtwo\x1b[K\n"


def test_job_line_shows_cancel_requests_and_retries() -> None:
    job = Job.from_dict(job_json(status="running", cancel_requested=True, attempt=2,
                                 progress={"stage": "align", "step": 0, "total_steps": 0}))
    assert job_line(job) == "ftjob-1 running (cancel requested) align attempt 2/3"
