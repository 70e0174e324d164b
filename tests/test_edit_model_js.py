"""The label screen's editing model (ui/js/edit_model.js), tested with node's built-in runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js"


def test_edit_model_js() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (bash packaging/install.sh --dev installs nodejs)")
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, f"no JS tests in {JS_TESTS}"
    proc = subprocess.run(
        [node, "--test", *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # The runner's TAP summary: every test ran and passed.
    assert "# fail 0" in proc.stdout, proc.stdout[-3000:]
    assert "# pass 0\n" not in proc.stdout
