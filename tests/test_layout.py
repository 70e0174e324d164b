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


def _module_imports() -> dict[str, set[str]]:
    """Each package module -> the package modules it imports (at any depth of the file)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t not in (name, "sst_desktop")}
    return graph


def test_no_import_cycles():
    graph = _module_imports()
    assert "sst_desktop.data.project" in graph["sst_desktop.data.registry"]  # the scan sees edges
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_cli_without_a_window_imports_no_torch_sam2_or_pandas():
    # What every command pays before it does anything: parsing its arguments.
    code = (
        "import contextlib, io\n"
        "from sst_desktop import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['--help'])"
    )
    loaded = _imported_after(code)
    assert "sst_desktop" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
