"""Dependencies inside the package run one way.

Every import of a realtime module by another is an edge, including imports inside
functions (a lazy import is still a dependency; ``if TYPE_CHECKING:`` blocks are not).
The graph must have no cycle, and the wire formats must stay pure.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "realtime"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(name: str) -> set[str]:
    """The realtime modules ``name`` imports, at the top or inside functions."""
    tree = ast.parse(MODULES[name].read_text())
    skipped = type_checking_lines(tree)
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "realtime")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "realtime":
                continue
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in MODULES else source)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle() -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(GRAPH):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_package():
    assert "realtime.hub" in GRAPH and "realtime.broker" in GRAPH["realtime.hub"]
    assert "realtime.stores.history" in GRAPH["realtime.broker"]


def test_no_module_imports_one_that_imports_it_back():
    assert find_cycle() is None, " -> ".join(find_cycle())


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("realtime.broker", "realtime.hub"),
        ("realtime.hub", "realtime.revalidation"),
        ("realtime.hub", "realtime.runtime"),
        ("realtime.stores.history", "realtime.stores.durable"),
        ("realtime.stores.history", "realtime.broker"),
        ("realtime.stores.presence", "realtime.hub"),
        ("realtime.protocol", "realtime.registry"),
    ],
)
def test_lower_layers_do_not_depend_on_higher_ones(lower, higher):
    reachable, todo = set(), [lower]
    while todo:
        for target in GRAPH[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    assert higher not in reachable


@pytest.mark.parametrize(
    "name",
    [
        "realtime.protocol",
        "realtime.bayeux.protocol",
        "realtime.positions",
        "realtime.sse.protocol",
        "realtime.cloudevents",
    ],
)
def test_wire_formats_import_no_django_channels_or_asyncio(name):
    tree = ast.parse(MODULES[name].read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            imported.add((node.module or "").split(".")[0])
    assert not imported & {"django", "channels", "asgiref", "asyncio", "redis", "channels_redis"}
    assert GRAPH[name] <= {"realtime.errors", "realtime.positions", "realtime.protocol", "realtime.names"}
