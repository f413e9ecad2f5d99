"""The package's shape: imports only go from the lessons' helpers down to the core, and the
notebooks carry no plumbing."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from lessonlib.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "lessonlib"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# Layers from the bottom: a module may import from its own layer or a lower one, never higher.
LAYERS = ["core", "analysis", "teaching", "widgets", "programs"]
PLUMBING = re.compile(r"\b(torch_threads|set_num_threads|GENERATION_THREADS|decoding_threads)\b")


def layer_of(module: str) -> str:
    """The layer of a dotted lessonlib module name."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in ("analysis", "teaching", "widgets"):
        return parts[1]
    if len(parts) > 1 and parts[1] == "degeneration_lab":
        return "programs"
    return "core"


def lessonlib_imports(path: Path) -> set[str]:
    """The lessonlib modules a file imports (`from lessonlib import x` counts as lessonlib.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lessonlib"):
            if node.module == "lessonlib":
                found.update(f"lessonlib.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("lessonlib"))
    return found


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts).removesuffix(".__init__")


def upward_imports() -> list[str]:
    """Every import of a higher layer, as 'importer -> imported'."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported in sorted(lessonlib_imports(path)):
            if LAYERS.index(layer_of(imported)) > LAYERS.index(layer_of(importer)):
                problems.append(f"{importer} -> {imported}")
    return problems


def test_layers_are_read_from_module_names() -> None:
    assert layer_of("lessonlib.sampling") == "core"
    assert layer_of("lessonlib.analysis.sweeps") == "analysis"
    assert layer_of("lessonlib.widgets.nucleus") == "widgets"
    assert layer_of("lessonlib.teaching.quiz") == "teaching"
    assert layer_of("lessonlib.degeneration_lab.__main__") == "programs"


def test_imports_only_go_down() -> None:
    assert upward_imports() == []


def test_the_upward_check_catches_a_core_module_importing_a_widget(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "lessonlib"
    (fake / "widgets").mkdir(parents=True)
    (fake / "sampling.py").write_text("from lessonlib.widgets.view import x\n", encoding="utf-8")
    (fake / "widgets" / "view.py").write_text(
        "from lessonlib.sampling import y\n", encoding="utf-8"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == ["lessonlib.sampling -> lessonlib.widgets.view"]


def test_notebooks_carry_no_thread_plumbing() -> None:
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                found = PLUMBING.search("".join(cell["source"]))
                assert found is None, f"{path.name} cell {index} sets threads: {found.group(0)}"


def test_the_command_line_program_lives_in_its_own_main_module() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py" or path.name == "train.py":
            continue  # train.py is a module and a program: `python -m lessonlib.train`
        source = path.read_text(encoding="utf-8")
        assert "argparse" not in source, f"{path.relative_to(PACKAGE)} parses a command line"
