"""The import-layer rule of docs/architecture.md, checked on the source: every import of the
package (at module level or inside a function) runs down the layers, and no module imports
itself back through others (no cycle). A new import that breaks the rule fails here, naming the
file and the arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnd_depth_ros"

#: Modules at the top of the package: the vocabulary every layer shares.
CORE = {"__init__", "atomic_file", "camera", "errors", "geometry"}

#: Layer -> the layers it may import (besides itself and core). docs/architecture.md, "Layers".
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "messages": set(),
    "models": set(),
    "data": {"messages"},
    "synthetic": {"data", "messages"},
    "inference": {"data", "models"},
    "evaluation": {"data", "messages", "models", "inference"},
    "training": {"data", "models", "inference", "evaluation"},
    "ros": {"messages", "inference"},
    "commands": {"data", "messages", "models", "synthetic", "inference", "evaluation",
                 "training", "ros", "cli"},
    "cli": {"commands"},
}

#: Layers that run on machines without ROS: they never import rclpy.
NO_RCLPY = {"core", "messages", "models", "data", "synthetic", "inference", "training"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in the file, ``from cnd_depth_ros import x`` as
    ``cnd_depth_ros.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cnd_depth_ros":
                found += [(node.lineno, f"cnd_depth_ros.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported package module: line}."""
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for line, target in _imports(path):
            if target.startswith("cnd_depth_ros") and target != module:
                while target not in modules and "." in target:  # a name imported from a module
                    target = target.rsplit(".", 1)[0]
                edges.setdefault(target, line)
    return graph


def test_every_layer_is_known() -> None:
    layers = {_layer(module) for module in _graph()}
    assert layers <= set(ALLOWED), f"add {sorted(layers - set(ALLOWED))} to the layer rule"


def _against(graph: dict[str, dict[str, int]]) -> list[str]:
    """The imports of ``graph`` that break the layer rule, one line each."""
    return [
        f"{module} (line {line}) -> {target}: {_layer(module)} may not import {_layer(target)}"
        for module, edges in sorted(graph.items())
        for target, line in sorted(edges.items())
        if _layer(target) not in {"core", _layer(module)} | ALLOWED[_layer(module)]
    ]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import cycles of ``graph``: Tarjan's strongly connected components of more than one
    module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_imports_run_down_the_layers() -> None:
    against = _against(_graph())
    assert not against, "imports against the layer rule:\n" + "\n".join(against)


def test_no_import_cycle() -> None:
    assert not _cycles(_graph())


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    """What the two checks above would report, on a made-up graph."""
    graph = {
        "cnd_depth_ros.models.cnd": {"cnd_depth_ros.training.trainer": 3},
        "cnd_depth_ros.models.backbone": {"cnd_depth_ros.models.artifact": 14},
        "cnd_depth_ros.models.artifact": {"cnd_depth_ros.models.backbone": 38,
                                          "cnd_depth_ros.camera": 36},
        "cnd_depth_ros.ros.node": {"cnd_depth_ros.messages.image": 5},
    }
    assert _against(graph) == [
        "cnd_depth_ros.models.cnd (line 3) -> cnd_depth_ros.training.trainer: models may not "
        "import training"
    ]
    assert _cycles(graph) == [["cnd_depth_ros.models.artifact", "cnd_depth_ros.models.backbone"]]


@pytest.mark.parametrize("layer", sorted(NO_RCLPY))
def test_no_rclpy_below_ros(layer: str) -> None:
    found = [
        f"{path.relative_to(PACKAGE.parent)} line {line}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if _layer(_module(path)) == layer
        for line, target in _imports(path)
        if target.split(".")[0] == "rclpy"
    ]
    assert not found, f"{layer} imports rclpy: {found}"


def test_frame_needs_neither_torch_nor_ros() -> None:
    imported = {target.split(".")[0] for _, target in _imports(PACKAGE / "data" / "frame.py")}
    assert not imported & {"torch", "rclpy", "sensor_msgs"}


def test_no_private_rclpy_api() -> None:
    """rclpy's implementation modules change between distros; the package uses its public API."""
    found = [
        f"{path.relative_to(PACKAGE.parent)} line {line}: {target}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, target in _imports(path)
        if target.startswith(("rclpy.impl", "rclpy._"))
    ]
    assert not found, found
