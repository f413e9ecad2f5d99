"""Every notebook in notebooks/ run in a real JupyterLab in headless Chromium, as a learner would.

For each notebook: open it, clear the saved outputs, Run > Run All Cells, wait until the kernel
is idle and every cell has run, then check that no cell shows an error or a traceback, that
"Error displaying widget" never appears, that every widget view rendered, every ipympl canvas
has drawn pixels and every image loaded; take screenshots; drive the notebook's widgets (see
interactions.py) and check again. New notebooks are picked up by the glob below.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import REPO_ROOT, REPORT
from tests.browser.interactions import (
    WIDGET_INTERACTIONS,
    interactions_for,
    quiz_interactions,
    view_classes,
    views_constructed,
)
from tests.browser.jupyterlab import LabServer, NotebookPage

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
VIEW_CLASSES = view_classes(REPO_ROOT / "lessonlib" / "widgets")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_notebook(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def format_problems(where: str, problems: list[str]) -> str:
    return f"{where}:\n  " + "\n  ".join(problems)


@pytest.mark.browser
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_jupyterlab(
    notebook: Path, lab_server: LabServer, browser: Any, screenshot_dir: Path
) -> None:
    before = digest(notebook)
    for old in screenshot_dir.glob(f"{notebook.stem}-*.png"):
        old.unlink()  # this run's pictures only
    phases = {}
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        phases[name] = now - clock
        clock = now

    lab = NotebookPage(browser.new_page(), lab_server, f"notebooks/{notebook.name}")
    try:
        lab.open()
        # What a learner sees on opening, before running anything (saved outputs, saved widgets).
        on_open = lab.problems(require_all_executed=False)
        assert not on_open, format_problems(f"{notebook.name} as opened", on_open)
        phase("open")
        lab.run_all()
        phase("run all")
        after_run = lab.problems()
        assert not after_run, format_problems(f"{notebook.name} after Run All Cells", after_run)
        REPORT["notes"].extend(f"{notebook.stem} stderr, {line}" for line in lab.stderr())
        dom = lab.wait_for_rendering()
        assert dom["sliderHandles"] == dom["sliders"], f"{notebook.name}: a slider has no handle"
        learner_view = learner_view_problems(read_notebook(notebook), lab.snapshot(), dom)
        assert not learner_view, format_problems(
            f"{notebook.name} as a learner sees it", learner_view
        )
        phase("render")
        lab.screenshots(screenshot_dir, notebook.stem)
        phase("screenshots")
        interactions = interactions_for(notebook.stem, read_notebook(notebook))
        for number, interaction in enumerate(interactions, start=1):
            REPORT["interactions"].append(f"{notebook.stem}: {interaction(lab)}")
            lab.wait_until_idle()
            time.sleep(0.3)  # the last redraw reaches the canvas
            # The view just driven is scrolled into sight: keep what it shows now.
            shot = screenshot_dir / f"{notebook.stem}-interaction-{number}.png"
            lab.page.screenshot(path=str(shot))
        after_use = lab.problems()
        assert not after_use, format_problems(f"{notebook.name} after its interactions", after_use)
        phase("interactions")
        assert not lab.console_errors, f"{notebook.name}: console errors {lab.console_errors}"
    except Exception:
        # What the page showed when the test failed, for the person reading the report.
        lab.page.screenshot(path=str(screenshot_dir / f"{notebook.stem}-FAILED.png"))
        raise
    finally:
        lab.close()
        REPORT["timings"].append(
            (
                f"{notebook.stem} ("
                + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
                + ")",
                sum(phases.values()),
            )
        )
    assert lab.kernel_id not in lab_server.kernel_ids(), "the notebook's kernel is still running"
    assert digest(notebook) == before, f"{notebook.name} changed on disk during the test"


def learner_view_problems(
    notebook: dict[str, Any], snapshot: dict[str, Any], dom: dict[str, Any]
) -> list[str]:
    """After Run All: exercise stubs say "not written yet", answer keys and hints stay folded."""
    problems = []
    saved = notebook["cells"]
    for cell in snapshot["cells"]:
        index = cell["index"]
        if "exercise" in cell["tags"] and "not written yet" not in cell["stdout"]:
            problems.append(
                f"cell {index + 1}: the exercise stub's checker did not say 'not written yet'"
            )
        folded = saved[index].get("metadata", {}).get("jupyter", {}).get("source_hidden", False)
        if folded and not cell["inputHidden"]:
            problems.append(f"cell {index + 1}: its source should be folded, and it shows")
    details = sum(
        "".join(c["source"]).count("<details>") for c in saved if c["cell_type"] == "markdown"
    )
    if dom["details"] != details:
        problems.append(f"{details} folded hints in the Markdown, {dom['details']} rendered")
    if dom["openDetails"]:
        problems.append(f"{dom['openDetails']} folded hints are open before a click")
    return problems


# Cells added to a notebook in the browser (never saved) to show that the checks fail: an
# exception, a widget view whose model does not exist, and a widget callback that raises
# inside an Output widget.
BROKEN_CELLS = (
    "raise ValueError('a deliberate error')",
    """\
from IPython.display import display
view = {'model_id': 'f' * 32, 'version_major': 2, 'version_minor': 0}
display({'application/vnd.jupyter.widget-view+json': view}, raw=True)""",
    """\
import ipywidgets
out = ipywidgets.Output()
button = ipywidgets.Button(description='fail on purpose')
def fail(_button):
    with out:
        raise RuntimeError('a deliberate callback error')
button.on_click(fail)
ipywidgets.VBox([button, out])""",
)

INSERT_AND_RUN_JS = """
async ([path, sources]) => {
  const app = window.jupyterapp;
  const panel = [...app.shell.widgets('main')].find(w => w.context && w.context.path === path);
  const notebook = panel.content;
  sources.forEach((source, i) => {
    notebook.model.sharedModel.insertCell(i, {cell_type: 'code', source: source});
  });
  for (let i = 0; i < sources.length; i++) {
    notebook.activeCellIndex = i;
    await app.commands.execute('notebook:run-cell');
  }
}
"""


@pytest.mark.browser
def test_checks_report_errors_and_broken_widgets(lab_server: LabServer, browser: Any) -> None:
    notebook = NOTEBOOKS[0]
    before = digest(notebook)
    lab = NotebookPage(browser.new_page(), lab_server, f"notebooks/{notebook.name}")
    try:
        lab.open()
        assert lab.problems(require_all_executed=False) == []
        lab.menu("Edit", "Clear Outputs of All Cells")  # so that no saved count hides a cell
        lab.page.evaluate(INSERT_AND_RUN_JS, [lab.path, list(BROKEN_CELLS)])
        lab.wait_for(
            lambda: sum(cell["count"] is not None for cell in lab.snapshot()["cells"][:3]) == 3,
            60,
            "the inserted cells did not run",
        )
        lab.page.get_by_role("button", name="fail on purpose", exact=True).click()
        lab.page.locator(".widget-output .jp-OutputArea-output").filter(
            has_text="a deliberate callback error"
        ).first.wait_for()
        # The widget manager asks the kernel about the unknown model before it gives up.
        lab.page.locator(".jp-OutputArea-output").filter(
            has_text="Error displaying widget"
        ).first.wait_for()
        problems = "\n".join(lab.problems())
    finally:
        lab.close()
    assert "cell 1 raised ValueError: a deliberate error" in problems
    assert "cell 1 shows a traceback" in problems
    assert "cell 2 shows 'Error displaying widget" in problems
    assert "cell 3 shows a traceback" in problems and "deliberate callback error" in problems
    # An Output widget's traceback sits in nested output areas: reported once.
    assert problems.count("cell 3 shows a traceback") == 1
    # The notebook's own cells never ran here: reported as such.
    assert "has no execution count (never ran)" in problems
    assert digest(notebook) == before, "the inserted cells reached the file on disk"


def test_every_view_in_a_notebook_has_an_interaction() -> None:
    missing = {}
    for path in NOTEBOOKS:
        registered = {i.view for i in interactions_for(path.stem, read_notebook(path))}
        unregistered = views_constructed(read_notebook(path), VIEW_CLASSES) - registered
        if unregistered:
            missing[path.stem] = sorted(unregistered)
    assert not missing, (
        f"notebooks show views the browser test never drives: {missing}; add interactions "
        "for them to WIDGET_INTERACTIONS in tests/browser/interactions.py"
    )


def test_interactions_name_existing_notebooks_and_views() -> None:
    stems = {path.stem for path in NOTEBOOKS}
    assert set(WIDGET_INTERACTIONS) <= stems, (
        f"no such notebooks: {set(WIDGET_INTERACTIONS) - stems}"
    )
    for stem, interactions in WIDGET_INTERACTIONS.items():
        source = json.dumps(read_notebook(REPO_ROOT / "notebooks" / f"{stem}.ipynb"))
        for interaction in interactions:
            assert interaction.view in VIEW_CLASSES, f"{stem}: unknown view {interaction.view}"
            assert interaction.view in source, f"{stem} never shows a {interaction.view}"


def test_every_shown_quiz_is_answered_in_the_browser() -> None:
    notebook = {
        "cells": [
            {"cell_type": "code", "source": ['show_quiz("nucleus-size")']},
            {"cell_type": "markdown", "source": ['show_quiz("p1-at-tau-1") in prose']},
            {"cell_type": "code", "source": ["show_quiz('nucleus-size')  # again"]},
        ]
    }
    assert [q.quiz_id for q in quiz_interactions(notebook)] == ["nucleus-size"]


def test_learner_view_problems_catch_an_unfolded_key_and_a_silent_stub() -> None:
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["def my_f(): ..."],
                "metadata": {"tags": ["exercise"]},
            },
            {
                "cell_type": "code",
                "source": ["check_answer_key(...)"],
                "metadata": {"jupyter": {"source_hidden": True}},
            },
            {"cell_type": "markdown", "source": ["<details><summary>Hint</summary>x</details>"]},
        ]
    }
    snapshot = {
        "cells": [
            {"index": 0, "tags": ["exercise"], "stdout": "Traceback", "inputHidden": False},
            {"index": 1, "tags": [], "stdout": "", "inputHidden": False},
        ]
    }
    dom = {"details": 1, "openDetails": 1}
    assert learner_view_problems(notebook, snapshot, dom) == [
        "cell 1: the exercise stub's checker did not say 'not written yet'",
        "cell 2: its source should be folded, and it shows",
        "1 folded hints are open before a click",
    ]
    snapshot["cells"][0]["stdout"] = "not written yet: fill in ..."
    snapshot["cells"][1]["inputHidden"] = True
    assert learner_view_problems(notebook, snapshot, {"details": 1, "openDetails": 0}) == []


def test_view_classes_and_their_detection() -> None:
    assert {
        "TemperatureExplorer",
        "NucleusExplorer",
        "QuizView",
        "KVCacheStepper",
        "PipelineViewer",
    } <= VIEW_CLASSES
    cells = [
        {"cell_type": "code", "source": ["v = NucleusExplorer(model)\n", "QuizView(q)"]},
        {"cell_type": "markdown", "source": ["TemperatureExplorer(model) in prose"]},
        {"cell_type": "code", "source": ["MyNucleusExplorer(model)  # another class"]},
    ]
    assert views_constructed({"cells": cells}, VIEW_CLASSES) == {"NucleusExplorer", "QuizView"}
