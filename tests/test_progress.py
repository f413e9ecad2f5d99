"""The one progress bar: it stays on screen (a closed Jupyter bar leaves a widget that never renders)."""

from __future__ import annotations

import ast

from lessonlib.paths import REPO_ROOT
from lessonlib.progress import progress_bar


def test_the_bar_counts_and_stays_when_shown() -> None:
    bar = progress_bar(range(3), show=True, desc="x")
    assert bar.leave is True and not bar.disable
    assert list(bar) == [0, 1, 2]
    assert progress_bar(range(3), show=False).disable is True
    assert progress_bar(total=4, show=None).total == 4


def test_no_other_module_makes_its_own_bar() -> None:
    makers = []
    for path in sorted((REPO_ROOT / "lessonlib").rglob("*.py")):
        if path.name == "progress.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tqdm"):
                makers.append(path.relative_to(REPO_ROOT).as_posix())
    assert makers == [], "use lessonlib.progress.progress_bar"
