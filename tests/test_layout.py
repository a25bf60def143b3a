"""The package layout of docs/design.md: rooms, one-way imports between them, and what the top level holds.

Rooms sit in one order, lowest first; a module may import from its own room
and from lower ones only (``cli -> demo -> training -> decoding -> model ->
functional -> checks -> kernels``, with the other rooms placed between). Imports under
``TYPE_CHECKING`` are types only and do not count; imports inside functions
do (a lazy import is still a dependency, and a cycle).
"""

from __future__ import annotations

import ast
import pathlib

import mt5fn

PACKAGE = pathlib.Path(mt5fn.__file__).parent
# Lowest first.
ROOMS = ("kernels", "checks", "functional", "model", "quant", "checkpoint", "tokenizer", "lora", "data", "decoding", "training",
         "demo", "cli")


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _room_imports(path: pathlib.Path) -> list[tuple[str, int]]:
    """(room imported, line) for every relative import of another room in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_lines(tree)
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for mt5fn/x.py, 1 for mt5fn/room/x.py
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.lineno in skipped or node.level == 0:
            continue
        if node.level == depth + 1:  # relative to the package itself: the first name is a room
            names = [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
            found += [(name, node.lineno) for name in names]
        if node.module and node.module.split(".")[0] == "mt5fn":
            found.append((node.module.split(".")[1], node.lineno))
    for node in ast.walk(tree):  # absolute imports of the package from inside it
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mt5fn.") \
                and node.lineno not in skipped:
            found.append((node.module.split(".")[1], node.lineno))
    return found


def test_the_top_level_holds_only_the_package_entry_points():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "reference.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(ROOMS)


def test_every_module_has_a_docstring():
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) is None]
    assert not missing, missing


def test_rooms_import_only_their_own_room_and_lower_ones():
    rank = {room: index for index, room in enumerate(ROOMS)}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) == 1:
            continue  # the top level re-exports every room
        room = parts[0]
        for target, line in _room_imports(path):
            if target in rank and rank[target] > rank[room]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target} (above {room})")
    assert not upward, "\n".join(upward)


def test_the_command_line_imports_no_private_module_of_another_room():
    private = []
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module and "._" in f".{node.module}":
                private.append(f"cli/{path.name}:{node.lineno} from ..{node.module}")
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                private += [f"cli/{path.name}:{node.lineno} {alias.name}" for alias in node.names
                            if alias.name.startswith("_")]
    assert not private, private
