"""The layer order of docs/architecture.md holds: no module imports from a package listed after its own (imports
inside functions included; the one exception: type-only imports of the recipe schema, ``ltx2train.config.schema``
under ``if TYPE_CHECKING:``), and every package is listed. A module over 400 lines says why in its docstring."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ltx2train"


def _layers() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    return block.group(1).split()


def _unit(path: Path) -> str:
    """The top-level package (or module) of ``ltx2train`` a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


SCHEMA = "ltx2train.config.schema"  # the recipe's types: a module below config may import them for annotations only


def _type_only_schema_imports(tree: ast.Module) -> set[int]:
    """ids of the ``from ltx2train.config.schema import ...`` nodes inside an ``if TYPE_CHECKING:`` block."""
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for statement in node.body:
                for sub in ast.walk(statement):
                    if isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module == SCHEMA:
                        allowed.add(id(sub))
    return allowed


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level unit) of every ``ltx2train`` import in a file, but the type-only ones of the recipe schema."""
    out = []
    tree = ast.parse(path.read_text())
    type_only = _type_only_schema_imports(tree)
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "ltx2train":
                names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
                out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("ltx2train.")]
    return out


def test_every_package_is_in_the_layer_list():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert sorted(units - set(_layers())) == []
    assert sorted(set(_layers()) - units) == []  # no stale entries


def test_imports_run_one_way():
    rank = {unit: i for i, unit in enumerate(_layers())}
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue
        for line, target in _imports(path):
            if target in rank and target != unit and rank[target] > rank[unit]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({unit}) imports {target}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds function-local imports and the ``from ltx2train import x`` form."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n    from ltx2train.training.trainer import Trainer\n\nfrom ltx2train import cli\n"
        "import ltx2train.models.specs\n"
    )
    assert sorted(_imports(probe)) == [(2, "training"), (4, "cli"), (5, "models")]


def test_only_a_type_only_import_of_the_recipe_schema_is_exempt(tmp_path):
    """Under ``if TYPE_CHECKING:`` an import of ``ltx2train.config.schema`` is not counted; one of any other
    module is, and so is an import of the schema outside that block."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n\n"
        "if TYPE_CHECKING:\n"
        "    from ltx2train.config.schema import Config\n"
        "    from ltx2train.training.trainer import Trainer\n"
        "    from ltx2train.config import DataConfig\n\n"
        "from ltx2train.config.schema import LoRAConfig\n"
    )
    assert sorted(_imports(probe)) == [(5, "training"), (6, "config"), (8, "config")]


def test_a_module_over_400_lines_says_why_in_its_docstring():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 400 and "Over 400 lines:" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    assert long == []
