"""The package's layers only point down: no import circles, no module importing a higher layer.

The imports are read statically (``ast``), those inside functions included, so a lazy import
cannot hide a circle. Importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``; that
implicit import counts too (except for a module's own packages and the root ``learn2invert``,
whose ``__init__`` is the public face and runs first anyway).

The layer order, bottom to top (a module may import its own layer and the layers below):

0. ``registry`` (names -> targets, ConfigError), ``outputs`` (output paths), ``checkpoint``
   (weights files), ``shipped`` (where the shipped models are): import nothing of the package;
1. ``operators``: forward models, their physics generator (simulated measurements) and helpers;
2. ``metrics`` (uses the FFT helpers) and the root package ``learn2invert`` (imports operators
   and metrics);
3. ``data`` (data sets; simulated coil maps and masks come from operators), ``nn`` (building
   blocks, the U-Net backbone, the proxes in ``nn/prox``);
4. ``solvers``: the Solver contract and every solver;
5. ``train``: config, datasets and solver by name, losses, the loop, validation;
6. ``inference``: load_solver, ``l2i eval``, ``l2i reconstruct``;
7. ``pretrained``: loading and exporting the shipped models;
8. ``bench``: the general benchmarks;
9. ``demo``, ``tour``;
10. ``cli``.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "learn2invert"

LAYERS = {
    "registry": 0, "outputs": 0, "checkpoint": 0, "shipped": 0,
    "operators": 1,
    "metrics": 2, "": 2,
    "data": 3, "nn": 3,
    "solvers": 4,
    "train": 5,
    "inference": 6,
    "pretrained": 7,
    "bench": 8,
    "demo": 9, "tour": 9,
    "cli": 10,
}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module and package of learn2invert."""
    found = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (explicitly, or implicitly through a package's ``__init__``)."""
    mods = modules()
    graph = {}
    for name, file in mods.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:  # "from package import module" imports that module
                    candidate = f"{module}.{alias.name}"
                    targets.add(candidate if candidate in mods else module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        deps = set()
        for target in targets:
            if target not in mods:
                continue
            deps.add(target)
            parts = target.split(".")
            for k in range(2, len(parts)):  # the packages whose __init__ the import runs
                parent = ".".join(parts[:k])
                if not (name == parent or name.startswith(parent + ".")):
                    deps.add(parent)
        graph[name] = deps - {name}
    return graph


def layer(module: str) -> int:
    """The layer of a module: that of its top-level subpackage or module (see the module docstring)."""
    top = module.split(".")[1] if "." in module else ""
    if top not in LAYERS:
        raise AssertionError(f"{module} is in no layer: add learn2invert.{top} to LAYERS in {__file__}")
    return LAYERS[top]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "learn2invert.operators.fft" in graph["learn2invert.metrics"]
    assert "learn2invert.inference.load" in graph["learn2invert.pretrained"]
    assert "learn2invert.shipped" in graph["learn2invert.train.config"]  # imported at module level
    assert "learn2invert.bench.config_memory" in graph["learn2invert.bench.memory"]  # imported inside a function
    assert "learn2invert.nn.prox" in graph["learn2invert.solvers.deq4ip"]  # the package __init__ it runs


def test_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join("  " + " <-> ".join(c) for c in found)


def test_no_upward_imports():
    graph = import_graph()
    upward = sorted(f"{a} (layer {layer(a)}) -> {b} (layer {layer(b)})"
                    for a in graph for b in graph[a] if layer(b) > layer(a))
    assert not upward, "upward imports:\n" + "\n".join("  " + line for line in upward)


def test_the_bottom_layer_imports_nothing_of_the_package():
    graph = import_graph()
    bottom = [m for m in graph if "." in m and layer(m) == 0]
    assert sorted(bottom) == ["learn2invert.checkpoint", "learn2invert.outputs", "learn2invert.registry",
                              "learn2invert.shipped"]
    assert {m: graph[m] for m in bottom if graph[m]} == {}
