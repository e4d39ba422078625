"""Uploads built to cost the server far more than their size: each is refused from what it declares
(header length, member count, directory size, array shape) before anything is inflated."""

from __future__ import annotations

import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bad_datasets import many_members, npy_header_bomb

from core.data.validate import DatasetLimits, validate_npz
from core.errors import DatasetError

MiB = 2**20


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
