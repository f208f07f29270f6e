"""The import graph of ``recstudio_edge``, built from the sources with ``ast``, keeps its shape.

Every ``import`` / ``from ... import`` statement of every ``.py`` file under the package counts,
wherever it stands (module level, inside a function, under ``if TYPE_CHECKING``): a deferred
import still ties the two files together. Relative imports are resolved; ``from pkg import name``
is an arrow to the module ``pkg.name`` when that file exists, else to ``pkg`` (its
``__init__.py``). Dynamic imports (``importlib.import_module``, the model discovery in
``recstudio_edge.model``) are not arrows.

The checks:

- no circle between files;
- no circle between package folders: a node is the package's first-level name
  (``model``, ``data``, ``edge``, ``evaluation``, ``callbacks``, ``tune``, and each top-level
  module: ``cli``, ``runner``, ``config``, ``registry``, ``names``, ``infer``, ``utils``, ...);
- none of the forbidden arrows ``model -> cli / runner / tune``, ``data -> model``,
  ``evaluation -> model``;
- ``edge/runtime.py`` (served on a device without torch) reaches no torch import, neither itself
  nor through the files it imports (and the ``__init__.py`` of their packages, which Python runs
  first).

A failure names the circle, or the file and line of the offending import. The checker is run on
small planted packages as well, so that it is known to catch what it is meant to.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "recstudio_edge"

FORBIDDEN = {"model": ("cli", "runner", "tune"), "data": ("model",), "evaluation": ("model",)}
TORCH_FREE = ("edge.runtime",)  # modules (relative to the package) that must not reach torch
TORCH = ("torch", "lightning", "pytorch_lightning")  # top-level names that import torch


@dataclass(frozen=True)
class Arrow:
    src: str  # dotted module name of the importing file
    dst: str  # dotted module name inside the package, or an outside top-level name ("torch")
    file: str  # the importing file, relative to the package's parent folder
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Graph:
    package: str
    modules: Dict[str, Path]  # dotted name -> file
    arrows: List[Arrow]  # to modules of the package
    outside: List[Arrow]  # to other top-level names

    def out(self) -> Dict[str, List[Arrow]]:
        table: Dict[str, List[Arrow]] = defaultdict(list)
        for a in self.arrows:
            table[a.src].append(a)
        return table


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def build_graph(package_dir: Path) -> Graph:
    """The import arrows of every ``.py`` file under ``package_dir``."""
    package_dir = Path(package_dir)
    files = sorted(package_dir.rglob("*.py"))
    modules = {module_name(package_dir, p): p for p in files}
    top = package_dir.name
    arrows: List[Arrow] = []
    outside: List[Arrow] = []
    seen: Set[Arrow] = set()

    def inside(target: str) -> Optional[str]:
        """The longest prefix of ``target`` that is a module of the package (None: a namespace dir)."""
        parts = target.split(".")
        while parts:
            name = ".".join(parts)
            if name in modules:
                return name
            parts.pop()
        return None

    for path in files:
        src = module_name(package_dir, path)
        rel = str(path.relative_to(package_dir.parent))
        is_pkg = path.name == "__init__.py"
        here = src.split(".") if is_pkg else src.split(".")[:-1]  # the package this file is in
        tree = ast.parse(path.read_text(), filename=str(path))

        def add(target: str, line: int) -> None:
            if target == top or target.startswith(top + "."):
                dst = inside(target)
                if dst is not None and dst != src:
                    arrow = Arrow(src, dst, rel, line)
                    if arrow not in seen:  # ``from .x import a, b``: one arrow
                        seen.add(arrow)
                        arrows.append(arrow)
            else:
                arrow = Arrow(src, target.split(".")[0], rel, line)
                if arrow not in seen:
                    seen.add(arrow)
                    outside.append(arrow)

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                    if node.level - 1 > len(here) - 1:
                        raise ValueError(f"{rel}:{node.lineno}: relative import beyond the package")
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if alias.name != "*" and sub in modules else base, node.lineno)
    return Graph(top, modules, arrows, outside)


def strongly_connected(nodes: Iterable[str], edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's strongly connected components with more than one node, each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def a_cycle(comp: Sequence[str], edges: Dict[str, Set[str]]) -> List[str]:
    """One cycle through the first node of a strongly connected component: [a, b, ..., a]."""
    start, members = comp[0], set(comp)
    prev: Dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("not a cycle")  # pragma: no cover


def folder(graph: Graph, module: str) -> str:
    """A module's node in the folder graph: its first name below the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def describe(cycle: List[str], examples: Dict[Tuple[str, str], List[Arrow]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        where = ", ".join(x.where() for x in examples[a, b][:3])
        steps.append(f"  {a} -> {b}   ({where})")
    return "\n".join(steps)


def file_circles(graph: Graph) -> List[str]:
    edges: Dict[str, Set[str]] = defaultdict(set)
    examples: Dict[Tuple[str, str], List[Arrow]] = defaultdict(list)
    for a in graph.arrows:
        edges[a.src].add(a.dst)
        examples[a.src, a.dst].append(a)
    return [f"import circle between files {' -> '.join(c)}:\n{describe(c, examples)}"
            for c in (a_cycle(comp, edges) for comp in strongly_connected(graph.modules, edges))]


def folder_arrows(graph: Graph) -> Dict[Tuple[str, str], List[Arrow]]:
    table: Dict[Tuple[str, str], List[Arrow]] = defaultdict(list)
    for a in graph.arrows:
        s, d = folder(graph, a.src), folder(graph, a.dst)
        if s != d:
            table[s, d].append(a)
    return table


def folder_circles(graph: Graph) -> List[str]:
    examples = folder_arrows(graph)
    edges: Dict[str, Set[str]] = defaultdict(set)
    for s, d in examples:
        edges[s].add(d)
    nodes = {folder(graph, m) for m in graph.modules}
    return [f"import circle between package folders {' -> '.join(c)}:\n{describe(c, examples)}"
            for c in (a_cycle(comp, edges) for comp in strongly_connected(nodes, edges))]


def forbidden_arrows(graph: Graph) -> List[str]:
    out = []
    for (s, d), found in sorted(folder_arrows(graph).items()):
        if d in FORBIDDEN.get(s, ()):
            out += [f"forbidden arrow {s} -> {d}: {a.where()} imports {a.dst}" for a in found]
    return out


def torch_reached(graph: Graph, module: str) -> List[str]:
    """Every torch import reached from ``module``, each with the chain of imports leading to it."""
    out_edges = graph.out()
    outside: Dict[str, List[Arrow]] = defaultdict(list)
    for a in graph.outside:
        outside[a.src].append(a)

    def parents(m: str) -> List[str]:  # the packages Python initialises before ``m``
        parts = m.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in graph.modules]

    chain: Dict[str, List[str]] = {module: []}
    todo = [module]
    while todo:
        m = todo.pop(0)
        nxt = [(a.dst, a.where()) for a in out_edges.get(m, ())]
        nxt += [(p, f"{p} (package of {m})") for p in parents(m)]
        for dst, why in nxt:
            if dst not in chain:
                chain[dst] = chain[m] + [why]
                todo.append(dst)
    found = []
    for m in sorted(chain):
        for a in outside.get(m, ()):
            if a.dst in TORCH:
                via = " -> ".join(chain[m]) or "directly"
                found.append(f"{module} reaches {a.dst}: {a.where()} (via {via})")
    return found


def problems(graph: Graph) -> List[str]:
    out = file_circles(graph) + folder_circles(graph) + forbidden_arrows(graph)
    for rel in TORCH_FREE:
        name = f"{graph.package}.{rel}"
        if name in graph.modules:
            out += torch_reached(graph, name)
    return out


# ---- the package itself


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(PACKAGE)


def test_the_graph_sees_the_package(graph):
    # a sanity check of the parse: known arrows are found (relative, absolute, inside a function)
    arrows = {(a.src, a.dst) for a in graph.arrows}
    assert ("recstudio_edge.registry", "recstudio_edge.names") in arrows
    assert ("recstudio_edge.cli", "recstudio_edge.runner") in arrows  # deferred, inside _main
    assert ("recstudio_edge.model.general.bpr", "recstudio_edge.model.towers") in arrows
    assert any(a.src == "recstudio_edge.edge.runtime" and a.dst == "onnxruntime" for a in graph.outside)
    assert "recstudio_edge.edge.runtime" in graph.modules


def test_no_import_circle_between_files(graph):
    circles = file_circles(graph)
    assert not circles, "\n".join(circles)


def test_no_import_circle_between_package_folders(graph):
    circles = folder_circles(graph)
    assert not circles, "\n".join(circles)


def test_no_forbidden_arrow(graph):
    bad = forbidden_arrows(graph)
    assert not bad, "\n".join(bad)


def test_the_edge_runtime_reaches_no_torch(graph):
    bad = torch_reached(graph, "recstudio_edge.edge.runtime")
    assert not bad, "\n".join(bad)


def test_the_registry_imports_no_model(graph):
    reached = {a.dst for a in graph.arrows if a.src == "recstudio_edge.registry"}
    assert reached <= {"recstudio_edge.names"}, reached


# ---- the checker catches what it is meant to (planted packages)


def plant(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_checker_catches_a_planted_file_circle(tmp_path):
    pkg = plant(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "import os\n\n\ndef f():\n    from .c import g\n    return g\n",
        "c.py": "from pkg.a import x\n",
        "d.py": "from .a import b\n",  # d -> a (and a -> b), no circle through d
    })
    g = build_graph(pkg)
    circles = file_circles(g)
    assert len(circles) == 1, circles
    msg = circles[0]
    assert "pkg.a -> pkg.b -> pkg.c -> pkg.a" in msg
    # each arrow names its file and line, the deferred one included
    assert "pkg/a.py:1" in msg and "pkg/b.py:5" in msg and "pkg/c.py:1" in msg
    assert problems(g) == circles + folder_circles(g)


def test_checker_catches_a_planted_folder_circle_and_forbidden_arrows(tmp_path):
    pkg = plant(tmp_path, {
        "model/__init__.py": "",
        "model/net.py": "from ..runner import go\n",
        "data/__init__.py": "",
        "data/reader.py": "from .. import model\n",  # resolves to pkg.model (its __init__.py)
        "evaluation/__init__.py": "",
        "evaluation/m.py": "from pkg.model.net import Net\n",
        "runner.py": "def go():\n    from .data.reader import read\n",
    })
    g = build_graph(pkg)
    assert not file_circles(g)  # runner -> data.reader -> model -> ..., no file circle
    circles = folder_circles(g)
    assert len(circles) == 1 and "data -> model -> runner -> data" in circles[0], circles
    assert "pkg/model/net.py:1" in circles[0] and "pkg/runner.py:2" in circles[0]
    bad = forbidden_arrows(g)
    assert bad == ["forbidden arrow data -> model: pkg/data/reader.py:1 imports pkg.model",
                   "forbidden arrow evaluation -> model: pkg/evaluation/m.py:1 imports pkg.model.net",
                   "forbidden arrow model -> runner: pkg/model/net.py:1 imports pkg.runner"], bad


def test_checker_catches_torch_reached_from_the_runtime(tmp_path):
    pkg = plant(tmp_path, {
        "edge/__init__.py": "",
        "edge/runtime.py": "import numpy\nfrom .helpers import pad\n",
        "edge/helpers.py": "def pad():\n    from ..utils import u\n",
        "utils.py": "import torch.nn as nn\n",
    })
    g = build_graph(pkg)
    bad = torch_reached(g, "pkg.edge.runtime")
    assert bad == ["pkg.edge.runtime reaches torch: pkg/utils.py:1 "
                   "(via pkg/edge/runtime.py:2 -> pkg/edge/helpers.py:2)"], bad
    # the package's own __init__.py runs first: torch there is reached too
    (pkg / "utils.py").write_text("")
    (pkg / "edge" / "__init__.py").write_text("import lightning.pytorch\n")
    bad = torch_reached(build_graph(pkg), "pkg.edge.runtime")
    assert len(bad) == 1 and "pkg/edge/__init__.py:1" in bad[0], bad
    (pkg / "edge" / "__init__.py").write_text("")
    assert torch_reached(build_graph(pkg), "pkg.edge.runtime") == []
