"""No module reaches into another module's private names (house style: one idea, one owner).

Flags, in every file of `mlxkit/`:
- `obj._name` where `obj` is not `self` / `cls` and `_name` is not defined in the same file (a
  module-private helper class may use its own private attributes across instances);
- `getattr(obj, "_name")` / `hasattr(obj, "_name")` likewise (the same access, spelled as a string);
- `from mlxkit.x import _name` where `_name` is not a module (private modules are package-internal
  and may be imported; their public names are what they offer).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mlxkit"

# (file, name): each with the reason it cannot be avoided.
ALLOWED = {
    # MLX has no public way to ask whether a learning rate is a schedule; Trainer's
    # `learning_rate_is_scheduled` is the one place that reads MLX's private dict.
    ("trainer.py", "_schedulers"),
    # The standard library's documented frame accessor (no public spelling): the exporter reads
    # the caller's frames only to name the source line of an unsupported operation.
    ("export/_locate.py", "_getframe"),
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_here(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Attribute):
            names.add(node.target.attr)
    return {name for name in names if _private(name)}


def _is_module(package: str, name: str) -> bool:
    folder = PACKAGE.parent.joinpath(*package.split("."))
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()


def violations(path: Path) -> list[str]:
    relative = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _defined_here(tree)
    found = []

    def flag(node: ast.AST, name: str, what: str) -> None:
        if (relative, name) not in ALLOWED:
            found.append(f"mlxkit/{relative}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if node.attr not in own:
                flag(node, node.attr, f"{ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2:
                owner, key = node.args[0], node.args[1]
                is_self = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                literal = isinstance(key, ast.Constant) and isinstance(key.value, str)
                if literal and _private(key.value) and not is_self and key.value not in own:
                    flag(node, key.value, ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlxkit"):
            for alias in node.names:
                if _private(alias.name) and not _is_module(node.module or "", alias.name):
                    flag(node, alias.name, f"from {node.module} import {alias.name}")
    return found


def test_the_check_sees_what_it_should():
    """The checker itself, on a file with one of each kind of access (and allowed ones)."""
    sample = PACKAGE / "_boundary_sample_for_test.py"
    sample.write_text(
        "from mlxkit._batches import _take\n"
        "from mlxkit import _blas\n"
        "class Local:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def same(self, other):\n"
        "        return other._mine\n"
        "def f(trainer, optimizer):\n"
        "    getattr(optimizer, '_schedulers', {})\n"
        "    return trainer._logs()\n"
    )
    try:
        found = violations(sample)
    finally:
        sample.unlink()
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "from mlxkit._batches import _take",
        "getattr(optimizer, '_schedulers', {})",
        "trainer._logs",
    ]


def test_no_module_reaches_into_another_modules_private_names():
    found = [line for path in sorted(PACKAGE.rglob("*.py")) for line in violations(path)]
    assert found == [], "\n".join(found)
