"""The dashboard's chart axis labels (format.js `tickLabels`), run in Node: a learning rate's ticks
(2e-5 and the like) must not all read `0`, and every label must say its tick's value."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.service.api_fixtures import REPO_ROOT
from tests.services import unavailable

FORMAT_JS = REPO_ROOT / "api" / "dashboard" / "static" / "js" / "format.js"


def tick_labels(tmp_path: Path, *axes: list[float]) -> list[list[str]]:
    """format.js is an ES module with no package.json of its own: run a copy beside one that says so."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is absent: make install needs it (npm) for the dashboard's chart library")
    shutil.copy(FORMAT_JS, tmp_path / "format.js")
    (tmp_path / "package.json").write_text('{"type": "module"}')
    script = (f"import {{ tickLabels }} from {json.dumps(str(tmp_path / 'format.js'))};"
              f"console.log(JSON.stringify({json.dumps(axes)}.map(tickLabels)));")
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_small_values_keep_their_value_and_large_ones_stay_plain(tmp_path: Path) -> None:
    lr, cosine_tail, loss, steps, tight = tick_labels(
        tmp_path, [0, 5e-6, 1e-5, 1.5e-5, 2e-5], [1e-7, 2e-7, 3e-7], [0, 0.2, 0.4, 0.6000000000000001],
        [0, 500, 1000, 1500], [1.2, 1.25, 1.3])
    assert lr == ["0", "5.0e-6", "1.0e-5", "1.5e-5", "2.0e-5"]
    assert cosine_tail == ["1e-7", "2e-7", "3e-7"]
    assert loss == ["0", "0.2", "0.4", "0.6"]
    assert steps == ["0", "500", "1000", "1500"]
    assert tight == ["1.2", "1.25", "1.3"]
