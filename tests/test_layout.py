"""The package layout: no import cycles (function-level imports included), imports point down
(cli -> train/io/viz/data/distributed -> model -> layers -> utils -> backends), the library never
imports the command line, and no module is over 400 lines.

The import graph is read from the source with ``ast``, never by importing it, so an import inside
a function counts as much as one at the top of a file.  ``from pkg import name`` depends on the
module ``pkg.name`` when there is one, else on ``pkg`` itself (its ``__init__``).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dcnn", "backends")
MAX_LINES = 400

# Lower ranks are imported by higher ones, never the other way round.  Modules of one rank may
# import each other as long as no cycle forms.
RANKS = [
    ("backends", 0),
    ("dcnn.utils", 1),
    ("dcnn.layers", 2),
    ("dcnn.model", 3), ("dcnn.testing", 3),
    ("dcnn.data", 4), ("dcnn.io", 4), ("dcnn.viz", 4), ("dcnn.distributed", 4), ("dcnn.train", 4),
    ("dcnn.cli", 6), ("dcnn.__main__", 6),
    ("dcnn", 5),          # the package's face re-exports the library; only the CLI may import it
]


def rank(module: str) -> int:
    for prefix, value in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            return value
    raise AssertionError(f"{module} has no place in the layout; add its package to RANKS in {__file__}")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    files = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every known module that ``path`` imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i in range(len(parts), 0, -1):       # the longest known module the name starts with
                if ".".join(parts[:i]) in known:
                    found.add(".".join(parts[:i]))
                    break
    found.discard(module)
    return found


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a closed path."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_closed_path(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _closed_path(graph, component: set[str]) -> list[str]:
    """One cycle through the component's first module, spelled a -> b -> ... -> a."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def upward_imports(graph) -> list[str]:
    return sorted(f"{m} (rank {rank(m)}) imports {d} (rank {rank(d)})"
                  for m, deps in graph.items() for d in deps if rank(d) > rank(m))


def cli_imports(graph) -> list[str]:
    cli = lambda m: m == "dcnn.cli" or m.startswith("dcnn.cli.")
    return sorted(f"{m} -> {d}" for m, deps in graph.items() if not cli(m) and m != "dcnn.__main__"
                  for d in deps if cli(d))


# --- the project ---------------------------------------------------------------------------------

GRAPH = import_graph()


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_library_never_imports_the_command_line():
    assert not cli_imports(GRAPH), "\n".join(cli_imports(GRAPH))


def test_imports_point_down():
    assert not upward_imports(GRAPH), "\n".join(upward_imports(GRAPH))


def test_every_module_has_a_place_and_none_is_too_long():
    long = []
    for module, path in module_files(ROOT).items():
        rank(module)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long.append(f"{module}: {lines} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


# --- the checks can fail ---------------------------------------------------------------------------

def _package(tmp_path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(tmp_path, ("dcnn",))


def test_a_cycle_through_a_function_level_import_is_found_and_spelled_out(tmp_path):
    graph = _package(tmp_path, {
        "dcnn/__init__.py": "",
        "dcnn/model/__init__.py": "",
        "dcnn/model/network.py": "def save(net):\n    from ..io import loading\n    return loading\n",
        "dcnn/io/__init__.py": "",
        "dcnn/io/loading.py": "from ..model.network import save\n",
    })
    assert cycles(graph) == [["dcnn.io.loading", "dcnn.model.network", "dcnn.io.loading"]]
    assert upward_imports(graph) == ["dcnn.model.network (rank 3) imports dcnn.io.loading (rank 4)"]


def test_a_library_module_that_imports_the_cli_is_found(tmp_path):
    graph = _package(tmp_path, {
        "dcnn/__init__.py": "",
        "dcnn/cli/__init__.py": "def main(): ...\n",
        "dcnn/train/__init__.py": "",
        "dcnn/train/job.py": "def run():\n    from dcnn.cli import main\n",
    })
    assert cli_imports(graph) == ["dcnn.train.job -> dcnn.cli"]
    assert not cycles(graph)


def test_from_package_import_module_points_at_the_module(tmp_path):
    graph = _package(tmp_path, {
        "dcnn/__init__.py": "",
        "dcnn/data/__init__.py": "",
        "dcnn/data/datasets.py": "from . import userdata\n",
        "dcnn/data/userdata.py": "from .datasets import load\n",
    })
    assert cycles(graph) == [["dcnn.data.datasets", "dcnn.data.userdata", "dcnn.data.datasets"]]


@pytest.mark.parametrize("module", ["dcnn.layers.conv", "backends.numba_backend"])
def test_the_graph_sees_the_real_imports(module):
    """A guard against a walker that finds nothing (and so could never fail)."""
    assert GRAPH[module], f"{module} imports nothing, by this walker's reading"
