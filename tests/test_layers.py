"""The package's layers point down only, and no module imports itself back through others.

Every ``import`` in every module counts, the ones inside functions too (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "eatsched"

LAYERS = (
    ("_memory", "core", "data"),
    ("sim", "parallel"),
    ("algos", "gen"),
    ("experiments", "serving"),
    ("bench",),
    ("cli", "__init__", "__main__"),
)
"""Bottom first. A module may import from its own part or from a part on a lower layer, never from the same
layer's other parts or from above. ``__init__`` is the package's face (``eatsched/__init__.py``)."""

LAYER_OF = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (a submodule if it is one, else its package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        for n in names:
            if n.split(".")[0] != "eatsched":
                continue
            target = _resolve(n, modules)
            if target is not None and target != mod:
                out.add(target)
    return out


def _part(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_part_has_a_layer():
    parts = {_part(m) for m in _modules()}
    assert parts <= set(LAYER_OF), f"parts without a layer: {sorted(parts - set(LAYER_OF))}"


def test_imports_point_down_only():
    upward = []
    for mod, targets in _graph().items():
        for t in targets:
            a, b = _part(mod), _part(t)
            if a != b and LAYER_OF[b] >= LAYER_OF[a]:
                upward.append(f"{mod} -> {t}")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_a_lazy_upward_import(tmp_path):
    """The walker reads imports inside functions and relative imports (so it can fail)."""
    modules = {"eatsched.core.x": tmp_path / "x.py", "eatsched.algos": tmp_path / "__init__.py",
               "eatsched.algos.y": tmp_path / "y.py"}
    modules["eatsched.core.x"].write_text("def f():\n    from ..algos.y import z\n")
    assert _imports("eatsched.core.x", modules["eatsched.core.x"], modules) == {"eatsched.algos.y"}
