"""A job's `model` is an alias, an allowed hub name or a directory under a model root, nothing else:
no other server path, no `..` or symlink way out of a root; a proxy file lies under a root too.
Checked in core, refused by the API, and checked again by the worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.model_refs import BODY_ALIASES, ModelNotAllowed, ProxyNotAllowed, check_model_allowed, check_proxy_allowed
from store.db import session_scope
from store.models import Job
from store.settings import Settings, reset_settings
from tests.service.api_fixtures import (
    assert_error,
    auth,
    client_fixture,  # noqa: F401 (registers the `client` fixture)
    npz_bytes,
    upload,
)
from tests.service.conftest import OwnerKey
from tests.service.test_worker import CONFIG

HUB = ["roberta-base", "microsoft/swin-base-patch4-window7-224"]


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """A model root with one model, and things around it a request might try to reach."""
    root = tmp_path / "models"
    (root / "bert-dna").mkdir(parents=True)
    (root / "bert-dna" / "config.json").write_text("{}")
    outside = tmp_path / "elsewhere" / "secret-model"
    outside.mkdir(parents=True)
    (root / "escape").symlink_to(outside)
    (root / "inner-link").symlink_to(root / "bert-dna")
    (tmp_path / "root-link").symlink_to(root)
    return {"root": root, "outside": outside, "tmp": tmp_path}


def allowed(name: str, roots: dict[str, Path]) -> bool:
    try:
        check_model_allowed(name, [roots["root"]], HUB)
    except ModelNotAllowed as exc:
        assert exc.code == "model_not_allowed" and exc.field == "model"
        return False
    return True


def test_aliases_hub_names_and_directories_under_a_root_are_allowed(roots: dict[str, Path]) -> None:
    root = roots["root"]
    for name in [*BODY_ALIASES, *HUB, str(root / "bert-dna"), str(root / "bert-dna") + "/", str(root / "inner-link")]:
        assert allowed(name, roots), name
    # a root given through a symlink is the directory it names
    check_model_allowed(str(root / "bert-dna"), [roots["tmp"] / "root-link"], [])


@pytest.mark.parametrize("name", [
    "/etc", "/", "/tmp", "bert-base-uncased", "some-org/some-model", "bert-dna", "./bert-dna", "~/models/bert-dna",
])
def test_other_paths_and_hub_names_are_refused(name: str, roots: dict[str, Path]) -> None:
    assert not allowed(name, roots)


def test_escapes_from_a_root_are_refused(roots: dict[str, Path]) -> None:
    root, outside = roots["root"], roots["outside"]
    assert not allowed(str(outside), roots)  # absolute path outside every root
    assert not allowed(f"{root}/../elsewhere/secret-model", roots)  # `..` escape
    assert not allowed(f"{root}/bert-dna/../../elsewhere/secret-model", roots)
    assert not allowed(str(root / "escape"), roots)  # symlink inside the root, pointing out
    assert not allowed(str(root / "missing"), roots)  # would fall through to a hub lookup
    assert not allowed(str(root / "bert-dna" / "config.json"), roots)  # a file, not a model directory
    assert not allowed(f"{root}/bert-dna\x00", roots)


def test_no_roots_and_no_hub_names_leave_only_the_aliases(roots: dict[str, Path]) -> None:
    with pytest.raises(ModelNotAllowed):
        check_model_allowed(str(roots["root"] / "bert-dna"), [], [])
    with pytest.raises(ModelNotAllowed, match="roberta-base"):
        check_model_allowed("roberta-base", [], [])
    check_model_allowed("tiny-bert", [], [])


def test_the_aliases_are_the_bodies_core_builds_in() -> None:
    from core.modeling.bodies import TINY_CONFIGS

    assert set(BODY_ALIASES) == {"minilm-l6", *TINY_CONFIGS}


def test_job_create_refuses_a_model_outside_the_allow_list(client: TestClient, owner_key: OwnerKey,
                                                            roots: dict[str, Path], settings: Settings,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XMODAL_MODEL_ROOTS", str(roots["root"]))
    monkeypatch.setenv("XMODAL_ALLOWED_HUB_MODELS", ",".join(HUB))
    reset_settings()
    file_id = upload(client, owner_key.key, npz_bytes()).json()["id"]
    method = {"type": "finetune", "finetune": {"training": {"epochs": 1}}}

    def create(model: str) -> object:
        return client.post("/v1/fine_tuning/jobs", headers=auth(owner_key.key),
                           json={"model": model, "training_file": file_id, "method": method})

    for name in ["tiny-bert", "roberta-base", str(roots["root"] / "bert-dna")]:
        response = create(name)
        assert response.status_code == 200 and response.json()["model"] == name, response.text  # type: ignore[attr-defined]
    for name in ["/etc", str(roots["outside"]), f"{roots['root']}/../elsewhere/secret-model", str(roots["root"] / "escape"),
                 "not-listed/model"]:
        assert_error(create(name), 422, "model_not_allowed", "model")  # type: ignore[arg-type]
    listed = client.get("/v1/fine_tuning/jobs", headers=auth(owner_key.key)).json()["data"]
    assert len(listed) == 3


def test_proxy_files_must_lie_under_a_root(roots: dict[str, Path]) -> None:
    (roots["root"] / "proxy.npz").write_bytes(b"")
    (roots["outside"] / "proxy.npz").write_bytes(b"")
    check_proxy_allowed("digits", [roots["root"]])  # a built-in proxy needs no root
    check_proxy_allowed(str(roots["root"] / "proxy.npz"), [roots["root"]])
    check_proxy_allowed(f"cifar10:{roots['root'] / 'bert-dna'}", [roots["root"]])
    for proxy in [str(roots["outside"] / "proxy.npz"), str(roots["root"] / "escape" / "proxy.npz"), "proxy.npz",
                  "cifar10:/etc", f"conll2003:{roots['root']}/../elsewhere"]:
        with pytest.raises(ProxyNotAllowed):
            check_proxy_allowed(proxy, [roots["root"]])


def test_job_create_refuses_a_proxy_path_outside_the_roots(client: TestClient, owner_key: OwnerKey,
                                                          roots: dict[str, Path], settings: Settings) -> None:
    file_id = upload(client, owner_key.key, npz_bytes()).json()["id"]
    method = {"type": "orca", "orca": {"alignment": {"proxy": "/etc/passwd.npz"}}}
    response = client.post("/v1/fine_tuning/jobs", headers=auth(owner_key.key),
                           json={"model": "tiny-bert", "training_file": file_id, "method": method})
    assert_error(response, 422, "proxy_not_allowed", "alignment.proxy")


def test_the_worker_checks_again_before_loading(settings: Settings) -> None:
    """A job queued while a model was allowed fails, as a user error, once it no longer is."""
    from tests.service.test_worker import FakeRunner, load, submit
    from worker.lifecycle import execute_job

    _, job_id = submit(settings)
    with session_scope() as s:
        s.get(Job, job_id).config = {**CONFIG, "body": {"name": "/opt/somewhere/model"}}  # type: ignore[union-attr]
    runner = FakeRunner()
    assert execute_job(job_id, settings, runner) == "failed"
    assert load(job_id).error["code"] == "model_not_allowed"  # type: ignore[index]
    assert runner.calls == []


def test_the_worker_hands_its_model_roots_to_the_run(settings: Settings, roots: dict[str, Path]) -> None:
    """`alignment.proxy: auto` measures the labelled .npz files in <root>/proxies of each (core.proxies.choice)."""
    from tests.service.test_worker import FakeRunner, submit
    from worker.lifecycle import execute_job

    _, job_id = submit(settings)
    runner = FakeRunner()
    assert execute_job(job_id, settings.model_copy(update={"model_roots": [roots["root"]]}), runner) == "succeeded"
    assert runner.calls[0]["model_roots"] == [roots["root"]]
