"""Uploads built to cost the server far more than their size: each is refused from what it declares
(header length, member count, directory size, array shape) before anything is inflated."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_datasets import many_members, npy_header_bomb, zeros_archive

from core.data.validate import DatasetLimits, validate_npz
from core.errors import DatasetError

MiB = 2**20
REPO = Path(__file__).resolve().parents[2]


def deflated_zeros(path: Path, rows: int) -> None:
    """An honest float32 x of shape (rows, 1, 1024), all zeros: it deflates about 1000:1."""
    block = bytes(4 * 1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (rows, 1, 1024)})
            for _ in range(rows // 1024):
                member.write(block)
        with zf.open("y.npy", "w") as member:
            np.save(member, np.arange(rows) % 2)


def refused_with_peak(path: Path, limits: DatasetLimits = DatasetLimits()) -> tuple[DatasetError, float]:
    """The DatasetError validating `path` raises, and the peak memory it traced on the way, in MiB."""
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError) as caught:
            validate_npz(path, limits)
        return caught.value, tracemalloc.get_traced_memory()[1] / MiB
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("build", "field", "says"), [
    (npy_header_bomb(64 * MiB), "x", "header declares 4294967295 bytes"),
    (many_members(50_000), "file", "declares 50000 members"),
    (many_members(50_000, declared=2), "file", "declares 2 members"),
], ids=["npy_header_of_4GiB", "50k_members", "50k_members_declared_as_2"])
def test_a_bomb_is_refused_before_it_is_inflated(tmp_path: Path, build: Callable[[Path], None], field: str,
                                                 says: str) -> None:
    path = tmp_path / "bomb.npz"
    build(path)
    error, peak = refused_with_peak(path)
    assert (error.field, says in error.message) == (field, True), str(error)
    assert peak < 4, f"{peak:.1f} MiB traced"  # unchecked: 141 MiB for the header, ~25 MiB for the members


def test_declared_shape_is_checked_before_the_data_is_inflated(tmp_path: Path) -> None:
    """64 MiB of honest zeros past max_elements: refused from the header, not after streaming it."""
    path = tmp_path / "zeros.npz"
    deflated_zeros(path, rows=16 * 1024)
    assert path.stat().st_size < MiB
    error, peak = refused_with_peak(path, DatasetLimits(max_elements=1_000_000))
    assert error.field == "x" and "the limit is 1000000" in error.message
    assert peak < 4, f"{peak:.1f} MiB traced"


RSS_GROWTH = r"""
import json, resource, sys
from core.data.validate import validate_npz
from core.errors import DatasetError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    outcome = {"task": validate_npz(sys.argv[1]).task_type}
except DatasetError as exc:
    outcome = {"field": exc.field, "message": exc.message}
outcome["growth_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(outcome))
"""
RSS_BOUND_MIB = 100
"""Slices are 16 MiB; a target held whole (the bug) grows the process by its full declared size."""


def validated_in_a_fresh_process(path: Path) -> dict:
    """validate_npz in a new interpreter: its outcome and the growth of peak RSS (ru_maxrss) it caused."""
    out = subprocess.run([sys.executable, "-c", RSS_GROWTH, str(path)], capture_output=True, text=True,
                         cwd=REPO, check=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize(("members", "outcome", "says"), [
    # the red-team upload, at a quarter of its size: 400 MB of y in 1.7 MB was "processed", 200M classes
    ({"x": ("<f4", (1, 1, 16)), "y": ("<f8", (1, 50_000_000))}, {"field": "y"}, "50000000 values per sample"),
    ({"x": ("<f4", (75 * 1024, 1, 1024)), "y": ("<f4", (75 * 1024,))}, {"field": "x"}, "bytes of arrays"),
    ({"x": ("|u1", (30 * 1024, 1, 1024)), "y": ("<f8", (30 * 1024, 1024))}, {"field": "y"}, "bytes of arrays"),
    # under the inflation allowance: accepted, with 200 MiB of targets streamed, never held
    ({"x": ("|u1", (25 * 1024, 1, 1024)), "y": ("<f8", (25 * 1024, 1024))}, {"task": "dense_binary"}, None),
], ids=["y_of_400MB_per_sample", "x_of_300MiB", "dense_y_of_240MiB", "dense_y_of_200MiB_accepted"])
def test_a_deflated_bomb_costs_bounded_memory(tmp_path: Path, members: dict, outcome: dict, says: str | None) -> None:
    path = tmp_path / "bomb.npz"
    zeros_archive(members)(path)
    assert path.stat().st_size < 2 * MiB
    result = validated_in_a_fresh_process(path)
    assert {key: result[key] for key in outcome} == outcome, result
    if says is not None:
        assert says in result["message"], result["message"]
    assert result["growth_kib"] / 1024 < RSS_BOUND_MIB, result
