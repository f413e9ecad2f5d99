"""The notebooks open in JupyterLab, VS Code and Colab alike: no front-end-specific magic."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import nbformat
import pytest

from lessonlib.paths import REPO_ROOT
from lessonlib.widgets import view

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# `%matplotlib inline` works in every front end. `%matplotlib widget` needs ipympl's front-end
# extension, which Colab lacks until enabled, and the course's widgets build their own ipympl
# canvases anyway (lessonlib.widgets.view), so no notebook needs it.
ALLOWED_MAGICS = {"%matplotlib inline"}


def portability_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What in `notebook` would break or behave differently outside JupyterLab."""
    problems = []
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec {kernel!r}: VS Code and Colab look for 'python3'")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            stripped = line.strip()
            if stripped.startswith("%%"):
                problems.append(f"cell {index}: cell magic {stripped!r}")
            elif stripped.startswith("%") and stripped not in ALLOWED_MAGICS:
                problems.append(f"cell {index}: magic {stripped!r}")
            elif stripped.startswith("!"):
                problems.append(f"cell {index}: shell command {stripped!r}")
            elif "get_ipython()" in stripped:
                problems.append(f"cell {index}: get_ipython() call")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_only_portable_magics(path: Path) -> None:
    assert portability_problems(nbformat.read(path, as_version=4)) == []


def _notebook(*sources: str, kernel: str = "python3") -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3"}
    return notebook


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("%matplotlib widget\nimport torch", "magic '%matplotlib widget'"),
        ("%%time\nx = 1", "cell magic '%%time'"),
        ("!pip install ipympl", "shell command '!pip install ipympl'"),
        ("get_ipython().run_line_magic('matplotlib', 'widget')", "get_ipython() call"),
    ],
)
def test_the_check_catches_front_end_specific_code(source: str, found: str) -> None:
    assert portability_problems(_notebook("%matplotlib inline", source)) == [f"cell 1: {found}"]


def test_the_check_catches_a_foreign_kernel() -> None:
    assert portability_problems(_notebook("x = 1", kernel="julia-1.10")) == [
        "kernelspec 'julia-1.10': VS Code and Colab look for 'python3'"
    ]


def test_colab_gets_its_custom_widget_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append("enabled")
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = types.ModuleType("google")
    google.colab = colab
    for name, module in (
        ("google", google),
        ("google.colab", colab),
        ("google.colab.output", output),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    assert view._enable_colab_widgets() is True
    assert calls == ["enabled"]


def test_outside_colab_nothing_is_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert view._enable_colab_widgets() is False
