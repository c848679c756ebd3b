"""The house, read from the code's own imports (AST): the arrows of docs/DESIGN.md and rule 1 (no
module uses another module's private name). Nothing is imported or run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tailscope"
DESIGN = ROOT / "docs" / "DESIGN.md"


def _modules() -> dict[str, Path]:
    """tailscope module name -> file."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = _package(module, path).split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """(line, imported module, imported name or None) for every import, functions included."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in MODULES:  # `from . import x` imports the module x
                    yield node.lineno, full, None
                else:
                    yield node.lineno, base, a.name


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _arrows_table() -> dict[str, set[str]]:
    text = DESIGN.read_text()
    start = text.index("<!-- arrows:")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("room", "---") or set(cells[0]) <= set("-"):
            continue
        room = cells[0].strip("`")
        allowed = set(re.findall(r"`([^`]+)`", cells[1]))
        rows[room] = allowed
    return rows


ARROWS = _arrows_table()


def _room_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in MODULES.items():
        for line, target, _ in _imports(module, path):
            if not (target == "tailscope" or target.startswith("tailscope.")):
                continue
            a, b = _room(module), _room(target)
            if a != b and b != "_version":
                edges.setdefault((a, b), []).append(f"{path.relative_to(ROOT)}:{line} -> {target}")
    return edges


def test_the_design_names_every_room():
    rooms = {_room(m) for m in MODULES} - {"_version"}
    assert rooms == set(ARROWS), "docs/DESIGN.md's arrows table and src/tailscope differ"


def test_every_arrow_is_allowed_by_the_design():
    bad = [f"{a} -> {b}: {where[0]}" for (a, b), where in _room_edges().items()
           if b not in ARROWS.get(a, set())]
    assert not bad, "imports against docs/DESIGN.md:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_circle_between_rooms_or_modules():
    assert _cycle({a: b for a, b in ARROWS.items()}) is None, "the design's table has a circle"
    rooms: dict[str, set[str]] = {}
    for a, b in _room_edges():
        rooms.setdefault(a, set()).add(b)
    assert _cycle(rooms) is None
    modules: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for _, target, _ in _imports(module, path):
            if target in MODULES and target != module and not module.startswith(target + "."):
                # a package's __init__ re-exporting its modules is not an arrow back
                if MODULES[target].name == "__init__.py" and module.startswith(target):
                    continue
                modules.setdefault(module, set()).add(target)
    # an __init__ imports its own modules; a module importing its package's __init__ would loop
    cycle = _cycle(modules)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_module_imports_another_modules_private_name():
    bad = []
    for module, path in MODULES.items():
        for line, target, name in _imports(module, path):
            if not target.startswith("tailscope"):
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if name and _private(name) and target != module:
                bad.append(f"{where}: {target}.{name}")
            # a private module is imported only from inside its own package
            parts = target.split(".")
            for i, part in enumerate(parts):
                if _private(part) and part != "_version":
                    owner = ".".join(parts[:i])
                    if not (module == owner or module.startswith(owner + ".")):
                        bad.append(f"{where}: {target} (private to {owner})")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines: functions, classes, assignments, attributes set on anything,
    dataclass fields and parameters."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            if not isinstance(node, ast.ClassDef):
                out.update(a.arg for a in node.args.args + node.args.kwonlyargs)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def test_no_module_reads_another_modules_private_attribute():
    """`plots._new`, `analysis._esds`, `ref._loader`, `replace(ref, _loader=...)`: a private
    attribute or field used where it is not defined (its owner is another module)."""
    bad = []
    for _module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = _defined_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg and _private(node.arg) \
                    and node.arg not in own:
                bad.append(f"{path.relative_to(ROOT)}:{node.value.lineno}: {node.arg}=")
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not bad, "private attributes of other modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("room", sorted(ARROWS))
def test_each_room_has_its_row(room):
    assert room in ARROWS and all(r in ARROWS or r == "_version" for r in ARROWS[room])


# the planner and the splitter: what walks a model's layers. Only the engine's runner (and the
# sources, which define them) may use them; every feature declares its one-layer work instead.
_LAYER_WALKERS = {"tailscope.engine.plan": None, "tailscope.sources.split": None,
                  "tailscope.sources.derived": {"derive"},
                  "tailscope.engine.layer": {"analyze_batch", "batches"},
                  "tailscope.engine.run": {"run_layers"}}


def test_no_module_outside_the_engine_loops_over_a_models_layers():
    bad = []
    for module, path in MODULES.items():
        if _room(module) in ("engine", "sources"):
            continue
        for line, target, name in _imports(module, path):
            names = _LAYER_WALKERS.get(target, ())
            if target in _LAYER_WALKERS and (names is None or name in names):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}"
                           f"{'.' + name if name else ''}")
    assert not bad, ("a per-layer feature declares its work for the engine's runner "
                     "(tailscope.engine.run.run); it does not walk the plan itself:\n"
                     + "\n".join(bad))


def test_at_most_four_top_level_modules():
    top = sorted(p.stem for p in SRC.glob("*.py")
                 if p.stem not in ("__init__", "__main__", "_version"))
    assert len(top) <= 4, f"top-level modules of src/tailscope: {top} (group them by role)"
