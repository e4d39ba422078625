"""One corpus of malformed requests against a real uvicorn server, on SQLite and on PostgreSQL.

Every case must be the 4xx it names, with exactly the error shape and `param` naming the field:
never a 5xx, never a 200. The bad-dataset corpus goes through `POST /v1/files`; the rest covers
malformed uploads, job bodies (methods, hyperparameters, models outside the model roots, names),
unknown HTTP methods, control characters and out-of-range integers in ids and queries, unknown ids
on every route with an id, and another owner's ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from store.db import dispose_engines
from store.settings import reset_settings
from tests.core.bad_datasets import BAD_DATASETS, Builder
from tests.service.api_fixtures import assert_error, auth, live_server, npz_bytes, upload
from tests.service.conftest import _configure, make_owner_key
from tests.service.test_api_requests import _seed_job_children, job_body

pytestmark = pytest.mark.integration

FILES = "/v1/files"
JOBS = "/v1/fine_tuning/jobs"
HUGE = 2**63  # past every integer column


@dataclass(frozen=True)
class World:
    """The running server and what the cases point at: alice's objects, and bob, another owner."""

    backend: str
    http: httpx.Client
    tmp: Path
    models: Path  # the deployment's one model root
    alice: str
    bob: str
    file_id: str
    job_id: str
    checkpoint_id: str

    def path(self, template: str) -> str:
        return template.format(file=self.file_id, job=self.job_id, checkpoint=self.checkpoint_id,
                               models=self.models)

    def job(self, key: str | None = None, **overrides: Any) -> httpx.Response:
        return self.http.post(JOBS, headers=auth(key or self.alice), json=job_body(self.file_id, **overrides))


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[World], httpx.Response]
    status: int
    param: str | None = None
    code: str | None = None


# --- datasets: every bad .npz through the upload endpoint ----------------------------------------


def dataset(name: str, build: Builder, field_name: str) -> Case:
    def send(world: World) -> httpx.Response:
        path = world.tmp / f"{name}.npz"
        build(path)
        return upload(world.http, world.alice, path.read_bytes())

    return Case(f"dataset-{name}", send, 400, field_name, "invalid_dataset")


DATASET_CASES = [dataset(*case) for case in BAD_DATASETS]


# --- the upload request itself -------------------------------------------------------------------


def post_file(**request: Any) -> Callable[[World], httpx.Response]:
    headers = request.pop("headers", {})
    return lambda world: world.http.post(FILES, headers={**auth(world.alice), **headers}, **request)


MULTIPART = {"Content-Type": "multipart/form-data; boundary=xyz"}
UPLOAD_CASES = [
    Case("upload-as-json", post_file(json={"file": "x"}), 415, None, "unsupported_media_type"),
    Case("upload-as-text", post_file(content=b"x,y\n1,2", headers={"Content-Type": "text/plain"}), 415),
    Case("upload-multipart-without-boundary",
         post_file(content=b"x", headers={"Content-Type": "multipart/form-data"}), 415),
    Case("upload-without-file-part", post_file(files={"other": ("a.npz", b"abc")}), 422, "file",
         "missing_parameter"),
    Case("upload-file-as-text-field", post_file(files={"file": (None, "x" * 2000)}), 400, "file",
         "invalid_multipart"),
    Case("upload-two-file-parts", post_file(files=[("file", ("a.npz", b"a")), ("file", ("b.npz", b"b"))]), 400,
         "file", "invalid_multipart"),
    Case("upload-multipart-cut-short",
         post_file(content=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n\r\nab',
                   headers=MULTIPART), 400, None, "invalid_multipart"),
    Case("upload-multipart-garbage", post_file(content=b"garbage" * 10, headers=MULTIPART), 400, None,
         "invalid_multipart"),
    Case("upload-unknown-purpose", post_file(files={"file": ("a.npz", npz_bytes())}, data={"purpose": "batch"}),
         422, "purpose", "invalid_parameter"),
    Case("upload-purpose-2000-chars",
         post_file(files={"file": ("a.npz", npz_bytes())}, data={"purpose": "p" * 2000}), 400, "purpose",
         "invalid_multipart"),
    Case("upload-filename-300-unicode-chars", post_file(files={"file": ("é" * 296 + ".npz", npz_bytes())}), 422,
         "file", "invalid_parameter"),
]


# --- job bodies ----------------------------------------------------------------------------------


def job(**overrides: Any) -> Callable[[World], httpx.Response]:
    return lambda world: world.job(**overrides)


def method(kind: str, **sections: Any) -> Callable[[World], httpx.Response]:
    return job(method={"type": kind, kind: sections})


def post_job(**request: Any) -> Callable[[World], httpx.Response]:
    headers = request.pop("headers", {})
    return lambda world: world.http.post(JOBS, headers={**auth(world.alice), **headers}, **request)


def lr_literal(literal: bytes) -> Callable[[World], httpx.Response]:
    """A learning rate JSON itself cannot hold (NaN, Infinity), which Python's parser lets through."""
    body = b'{"model": "tiny-bert", "training_file": "f", "method": {"type": "orca", "orca": {"training": {"lr": '
    return post_job(content=body + literal + b"}}}}", headers={"Content-Type": "application/json"})


LONG_KEY = "🙂" * 65
JOB_CASES = [
    Case("job-unknown-method", job(method={"type": "magic"}), 422, "method.type", "invalid_config"),
    Case("job-negative-lr", method("orca", training={"lr": -1e-4}), 422, "method.orca.training.lr"),
    Case("job-batch-size-0", method("finetune", training={"batch_size": 0}), 422,
         "method.finetune.training.batch_size"),
    Case("job-epochs-1e9", method("pare", training={"epochs": 10**9}), 422, "method.pare.training.epochs"),
    Case("job-lr-as-string", method("orca", training={"lr": "fast"}), 422, "method.orca.training.lr"),
    Case("job-lr-nan", lr_literal(b"NaN"), 422, "method.orca.training.lr"),
    Case("job-lr-infinite", lr_literal(b"Infinity"), 422, "method.orca.training.lr"),
    Case("job-negative-alignment-lr", method("orca", alignment={"lr": -1}), 422, "method.orca.alignment.lr"),
    Case("job-mona-inner-lr-0", method("mona", mona={"inner_lr": 0}), 422, "method.mona.mona.inner_lr"),
    Case("job-noise-scale-above-1", method("contrastive_pare", contrastive={"noise_scales": [1.5]}), 422,
         "method.contrastive_pare.contrastive"),
    Case("job-misspelt-section", method("orca", trainnig={"epochs": 1}), 422, "method.orca.trainnig"),
    Case("job-hyperparameters-field", job(hyperparameters={"n_epochs": 3}), 422, "hyperparameters"),
    Case("job-seed-2e30", job(seed=10**30), 422, "seed"),
    Case("job-negative-seed", job(seed=-1), 422, "seed"),
    Case("job-broken-json", post_job(content=b'{"model": ', headers={"Content-Type": "application/json"}), 422,
         None, "invalid_json"),
    Case("job-form-encoded", post_job(data={"model": "tiny-bert", "training_file": "f"}), 422),
    Case("job-json-array", post_job(json=[1, 2]), 422),
    Case("job-without-training-file", post_job(json={"model": "tiny-bert"}), 422, "training_file",
         "missing_parameter"),
    Case("job-model-empty", job(model=""), 422, "model"),
    Case("job-model-513-unicode-chars", job(model="模" * 513), 422, "model"),
    Case("job-model-with-nul", job(model="tiny\x00bert"), 422, "model"),
    Case("job-model-absolute-path-outside-roots", job(model="/etc"), 422, "model", "model_not_allowed"),
    Case("job-model-escaping-the-root", lambda world: world.job(model=f"{world.models}/../outside"), 422, "model",
         "model_not_allowed"),
    Case("job-suffix-65-unicode-chars", job(suffix="é" * 65), 422, "suffix"),
    Case("job-suffix-with-nul", job(suffix="demo\x00"), 422, "suffix"),
    Case("job-metadata-17-keys", job(metadata={f"k{i}": "v" for i in range(17)}), 422, "metadata"),
    Case("job-metadata-value-513-unicode-chars", job(metadata={"k": "日" * 513}), 422, "metadata.k"),
    Case("job-metadata-key-65-unicode-chars", job(metadata={LONG_KEY: "v"}), 422, f"metadata.{LONG_KEY}.[key]"),
    Case("job-metadata-value-with-nul", job(metadata={"k": "\x00"}), 422, "metadata.k"),
    Case("job-metadata-value-not-a-string", job(metadata={"k": {"nested": 1}}), 422, "metadata.k"),
    Case("job-unknown-training-file", job(training_file="file-doesnotexist"), 404, "training_file",
         "file_not_found"),
    Case("job-unknown-validation-file", job(validation_file="file-doesnotexist"), 404, "validation_file",
         "file_not_found"),
    Case("job-training-file-with-nul", job(training_file="file-\x00"), 422, "training_file"),
    Case("job-another-owners-training-file", lambda world: world.job(world.bob), 404, "training_file",
         "file_not_found"),
    Case("job-idempotency-key-256-chars", post_job(headers={"Idempotency-Key": "k" * 256},
                                                   json={"model": "tiny-bert", "training_file": "f"}), 422),
]


# --- ids, routes and methods ---------------------------------------------------------------------


def call(verb: str, template: str, owner: str = "alice") -> Callable[[World], httpx.Response]:
    return lambda world: world.http.request(verb, world.path(template),
                                            headers=auth(world.alice if owner == "alice" else world.bob))


ROUTES_WITH_IDS = [
    ("GET", FILES + "/{file}"), ("DELETE", FILES + "/{file}"), ("GET", FILES + "/{file}/content"),
    ("GET", JOBS + "/{job}"), ("POST", JOBS + "/{job}/cancel"), ("GET", JOBS + "/{job}/events"),
    ("GET", JOBS + "/{job}/metrics"), ("GET", JOBS + "/{job}/checkpoints"),
    ("GET", JOBS + "/{job}/checkpoints/{checkpoint}/content"),
]
UNKNOWN = {"file": "file-doesnotexist", "job": "ftjob-doesnotexist", "checkpoint": "ftckpt-doesnotexist"}


def kind_of(template: str) -> str:
    return "checkpoint" if "{checkpoint}" in template else "job" if "{job}" in template else "file"


ID_CASES = [
    *(Case(f"unknown-id-{verb}-{template}", call(verb, template.replace(f"{{{kind_of(template)}}}",
                                                                          UNKNOWN[kind_of(template)])),
           404, None, f"{kind_of(template)}_not_found")
      for verb, template in ROUTES_WITH_IDS),
    *(Case(f"another-owners-id-{verb}-{template}", call(verb, template, owner="bob"), 404, None,
           f"{kind_of(template)}_not_found")
      for verb, template in ROUTES_WITH_IDS),
    Case("unicode-id", call("GET", FILES + "/файл-🙂"), 404, None, "file_not_found"),
    Case("id-of-10k-chars", call("GET", FILES + "/" + "f" * 10_000), 404, None, "file_not_found"),
    Case("file-id-with-nul", call("GET", FILES + "/file-%00"), 422, "file_id", "invalid_parameter"),
    Case("job-id-with-nul", call("POST", JOBS + "/ftjob-%00/cancel"), 422, "job_id", "invalid_parameter"),
    Case("checkpoint-id-with-nul", call("GET", JOBS + "/{job}/checkpoints/ftckpt-%00/content"), 422,
         "checkpoint_id", "invalid_parameter"),
    Case("list-files-after-nul", call("GET", FILES + "?after=%00"), 422, "after", "invalid_parameter"),
    Case("list-metrics-key-nul", call("GET", JOBS + "/{job}/metrics?key=%00"), 422, "key", "invalid_parameter"),
    Case("events-after-2e63", call("GET", JOBS + "/{job}/events?after=" + str(HUGE)), 422, "after"),
    Case("metrics-min-step-2e63", call("GET", JOBS + "/{job}/metrics?min_step=" + str(HUGE)), 422, "min_step"),
    Case("metrics-negative-min-step", call("GET", JOBS + "/{job}/metrics?min_step=-1"), 422, "min_step"),
    Case("list-limit-0", call("GET", FILES + "?limit=0"), 422, "limit"),
    Case("list-limit-1e30", call("GET", JOBS + "?limit=" + "9" * 30), 422, "limit"),
    Case("list-unknown-status", call("GET", JOBS + "?status=done"), 422, "status"),
    Case("list-unknown-purpose", call("GET", FILES + "?purpose=batch"), 422, "purpose"),
    Case("range-past-the-end", lambda world: world.http.get(world.path(FILES + "/{file}/content"),
                                                            headers={**auth(world.alice), "Range": "bytes=10000000-"}),
         416, "Range", "range_not_satisfiable"),
    Case("put-on-files", call("PUT", FILES), 405, None, "method_not_allowed"),
    Case("patch-a-job", call("PATCH", JOBS + "/{job}"), 405, None, "method_not_allowed"),
    Case("delete-a-job", call("DELETE", JOBS + "/{job}"), 405, None, "method_not_allowed"),
    Case("trace-on-files", call("TRACE", FILES), 405, None, "method_not_allowed"),
    Case("unknown-route", call("GET", "/v1/models"), 404, None, "not_found"),
    Case("no-api-key", lambda world: world.http.get(FILES), 401, None, "invalid_api_key"),
    Case("unknown-api-key", lambda world: world.http.get(FILES, headers=auth("xm-" + "0" * 40)), 401, None,
         "invalid_api_key"),
]

CORPUS = DATASET_CASES + UPLOAD_CASES + JOB_CASES + ID_CASES


def test_the_corpus_is_large_and_names_each_case_once() -> None:
    names = [case.name for case in CORPUS]
    assert len(names) == len(set(names))
    assert len(DATASET_CASES) >= 40 and len(CORPUS) >= 100


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One real server per backend for the whole corpus, with alice's file, job and checkpoint."""
    from migrations import upgrade

    data_dir = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    models = data_dir / "models"
    (models / "tiny").mkdir(parents=True)
    (data_dir / "outside").mkdir()
    env = {"data_dir": str(data_dir), "model_roots": str(models)}
    if request.param == "postgresql":
        env["database_url"] = request.getfixturevalue("postgres_database_url")
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = _configure(monkeypatch, **env)
        upgrade(settings.database_url)
        alice = make_owner_key(f"bad-input-alice-{request.param}").key
        bob = make_owner_key(f"bad-input-bob-{request.param}").key
        with live_server(data_dir) as url, httpx.Client(base_url=url, timeout=60) as http:
            file_id = upload(http, alice, npz_bytes()).json()["id"]
            created = http.post(JOBS, headers=auth(alice), json=job_body(file_id))
            assert created.status_code == 200, created.text
            job_id = created.json()["id"]
            yield World(request.param, http, data_dir, models, alice, bob, file_id, job_id,
                        _seed_job_children(job_id))
        dispose_engines()
        reset_settings()


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_bad_input_is_a_4xx_with_the_error_shape(world: World, case: Case) -> None:
    assert_error(case.send(world), case.status, case.code, case.param)
