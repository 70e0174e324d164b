"""The package's shape: what opening the window imports, and who may use whose private names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import sst_desktop

PACKAGE = Path(sst_desktop.__file__).parent
HEAVY = ("torch", "sam2", "pandas")


def _imported_after(code: str) -> set[str]:
    """Top-level module names imported by a fresh interpreter running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_opening_the_window_module_imports_no_torch_sam2_or_pandas():
    loaded = _imported_after("import sst_desktop.app.window, sst_desktop.app.server")
    assert "sst_desktop" in loaded  # the probe did import the package
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_server_and_window_use_no_private_name_of_another_module():
    for name in ("server.py", "window.py"):
        tree = ast.parse((PACKAGE / "app" / name).read_text(encoding="utf-8"))
        private = sorted(
            f"{node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.value.id not in ("self", "cls")
        )
        assert private == [], f"{name}: {private}"
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not any(a.name.startswith("_") for a in node.names), (name, node.module)
