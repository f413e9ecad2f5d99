"""The conventions every lesson follows: unspoiled quizzes with asserted keys, measured study
times (the same in the notebook and the README), a way through (links), and exercises.

Each rule is a function returning the problems it finds in one notebook (parsed JSON), tested
once on the real notebooks and once on small hand-made notebooks that break it.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from lessonlib.paths import REPO_ROOT
from lessonlib.teaching.quiz import answer_text, quiz_bank
from lessonlib.teaching.study_time import rounded_minutes, stated_minutes, study_time

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
MAIN_PATH_LIMIT = 30  # minutes: "about 25", rounded up to the next 5

SHOW = re.compile(r"""\bshow_quiz\(\s*["']([a-z0-9-]+)["']""")
KEY = re.compile(r"""\bcheck_answer_key\(\s*["']([a-z0-9-]+)["']""")
HEADING = re.compile(r"^#{1,3}\s+(.*)$", re.MULTILINE)


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    return "".join(cell["source"])


def hidden(cell: dict) -> bool:
    return bool(cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"))


def is_widget(output: dict) -> bool:
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


def visible_text(cell: dict) -> str:
    """What a learner reads in a cell without unfolding anything: source and text outputs."""
    parts = (
        []
        if hidden(cell)
        else [re.sub(r"<details>.*?</details>", "", source(cell), flags=re.DOTALL)]
    )
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append("".join(output["text"]))
        elif "text/plain" in output.get("data", {}) and not is_widget(output):
            parts.append("".join(output["data"]["text/plain"]))
    return "\n".join(parts)


def section_of_each_cell(notebook: dict) -> list[str]:
    """The title (lowercase) of the last heading at or before each cell."""
    titles, current = [], ""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            found = HEADING.findall(source(cell))
            if found:
                current = found[-1].strip().lower()
        titles.append(current)
    return titles


# ----- quizzes -----------------------------------------------------------------------------------


def quiz_problems(notebook: dict, stem: str) -> list[str]:
    """Quizzes shown without an asserted key, keys asserted for no shown quiz, spoilers."""
    bank = quiz_bank()
    sections = section_of_each_cell(notebook)
    problems, shown, keyed = [], {}, set()
    for index, (cell, section) in enumerate(zip(notebook["cells"], sections)):
        if cell["cell_type"] != "code":
            continue
        text = source(cell)
        if re.search(r"\bQuiz\(", text) and not hidden(cell):
            problems.append(f"cell {index} builds a Quiz in sight: use show_quiz(id)")
        for quiz_id in SHOW.findall(text):
            shown.setdefault(quiz_id, index)
        for quiz_id in KEY.findall(text):
            keyed.add(quiz_id)
            if not (hidden(cell) and section.startswith("answer key")):
                problems.append(
                    f"cell {index} asserts {quiz_id!r} outside a folded cell of 'Answer key'"
                )
    for quiz_id in sorted(set(shown) - keyed):
        problems.append(f"quiz {quiz_id!r} is shown but its key is never asserted")
    for quiz_id in sorted(keyed - set(shown)):
        problems.append(f"the key of {quiz_id!r} is asserted but the quiz is never shown")
    for quiz_id, index in shown.items():
        if quiz_id not in bank:
            problems.append(f"quiz {quiz_id!r} is not in the bank")
            continue
        owner, quiz = bank[quiz_id]
        if owner != stem:
            problems.append(f"quiz {quiz_id!r} belongs to {owner}, not to {stem}")
        if quiz.kind == "number":
            key = answer_text(quiz)
            before = "\n".join(visible_text(c) for c in notebook["cells"][:index])
            if re.search(rf"(?<![\d.]){re.escape(key)}(?!\d)", before):
                problems.append(f"the key {key} of {quiz_id!r} is shown before the quiz")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_quizzes_are_unspoiled_and_every_key_is_asserted(path: Path) -> None:
    assert quiz_problems(read(path), path.stem) == []


def test_every_quiz_in_the_bank_is_shown_in_its_notebook() -> None:
    shown = {
        quiz_id
        for path in NOTEBOOKS
        for cell in read(path)["cells"]
        if cell["cell_type"] == "code"
        for quiz_id in SHOW.findall(source(cell))
    }
    assert sorted(set(quiz_bank()) - shown) == []


def _nb(*cells: tuple[str, str, dict]) -> dict:
    made = []
    for kind, text, meta in cells:
        cell = {"cell_type": kind, "source": [text], "metadata": meta}
        if kind == "code":
            cell["outputs"] = []
        made.append(cell)
    return {"cells": made}


FOLDED = {"jupyter": {"source_hidden": True}}


def test_quiz_rule_accepts_a_good_notebook_and_catches_each_slip() -> None:
    good = _nb(
        ("markdown", "## Quiz", {}),
        ("code", 'show_quiz("nucleus-size")', {}),
        ("markdown", "## Answer key", {}),
        ("code", 'check_answer_key("nucleus-size", size)', FOLDED),
    )
    assert quiz_problems(good, "04_nucleus") == []
    unasserted = _nb(("code", 'show_quiz("nucleus-size")', {}))
    assert quiz_problems(unasserted, "04_nucleus") == [
        "quiz 'nucleus-size' is shown but its key is never asserted"
    ]
    in_sight = _nb(
        ("code", 'show_quiz("nucleus-size")', {}),
        ("markdown", "## Answer key", {}),
        ("code", 'check_answer_key("nucleus-size", size)', {}),
    )
    assert "outside a folded cell" in quiz_problems(in_sight, "04_nucleus")[0]
    orphan = _nb(("markdown", "## Answer key", {}), ("code", 'check_answer_key("x-y", 1)', FOLDED))
    assert quiz_problems(orphan, "04_nucleus") == [
        "the key of 'x-y' is asserted but the quiz is never shown"
    ]
    spoiled = _nb(
        ("markdown", "So p1 is about 0.87 here.", {}),
        ("code", 'show_quiz("p1-at-tau-half")', {}),
        ("markdown", "## Answer key", {}),
        ("code", 'check_answer_key("p1-at-tau-half", p1)', FOLDED),
    )
    assert quiz_problems(spoiled, "02_temperature") == [
        "the key 0.87 of 'p1-at-tau-half' is shown before the quiz"
    ]
    assert "builds a Quiz in sight" in quiz_problems(_nb(("code", "Quiz(q, answer=1)", {})), "x")[0]
    assert "belongs to 04_nucleus" in quiz_problems(good, "03_top_k")[0]


# ----- study time --------------------------------------------------------------------------------


def readme_times() -> dict[str, tuple[int, int]]:
    """(main, going deeper) minutes per notebook stem, from the README's course map."""
    times = {}
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for line in readme.splitlines():
        match = re.match(r"\|\s*\d\d\s*\|\s*\[`(\d\d_\w+)\.ipynb`\]\(notebooks/\1\.ipynb\)", line)
        if match:
            time = re.search(r"\|\s*(\d+) min(?: \(\+(\d+)\))?\s*\|\s*$", line)
            times[match[1]] = (int(time[1]), int(time[2] or 0)) if time else None
    return times


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stated_time_is_the_measured_time(path: Path) -> None:
    notebook = read(path)
    times = study_time(notebook)
    measured = (rounded_minutes(times["main"].minutes), rounded_minutes(times["deeper"].minutes))
    assert stated_minutes(notebook) == measured, (
        f"{path.name} states {stated_minutes(notebook)} minutes (main, going deeper); measured "
        f"{measured}: write '**Time:** about {measured[0]} minutes' (and 'plus about "
        f"{measured[1]} minutes for Going deeper') in its first cell"
    )
    assert measured[0] <= MAIN_PATH_LIMIT, f"{path.name}: main path {measured[0]} min"
    assert readme_times().get(path.stem) == measured, "README's course map disagrees"


def test_readme_states_the_course_total() -> None:
    times = [t for t in readme_times().values() if t is not None]
    main, deeper = sum(t[0] for t in times), sum(t[1] for t in times)
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"In all: {main} minutes of\nmain path" in readme
    assert f"and {deeper} minutes of *Going deeper*" in readme


# ----- a way through -----------------------------------------------------------------------------


def link_problems(notebooks: list[str], texts: dict[str, list[str]]) -> list[str]:
    """Each lesson's last cells link the next; the first notebook links every lesson."""
    problems = []
    for stem, following in itertools.pairwise(notebooks):
        tail = "\n".join(texts[stem][-3:])
        if f"]({following}.ipynb)" not in tail:
            problems.append(f"{stem} does not end with a link to {following}.ipynb")
    start = "\n".join(texts[notebooks[0]])
    for stem in notebooks[1:]:
        if f"]({stem}.ipynb)" not in start:
            problems.append(f"{notebooks[0]} does not link {stem}.ipynb")
    return problems


def test_every_lesson_links_the_next_and_the_start_links_all() -> None:
    stems = [p.stem for p in NOTEBOOKS]
    texts = {p.stem: [source(c) for c in read(p)["cells"]] for p in NOTEBOOKS}
    assert link_problems(stems, texts) == []
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert [s for s in stems if f"](notebooks/{s}.ipynb)" not in readme] == []


def test_link_rule_catches_a_missing_link() -> None:
    texts = {"00_a": ["[01](01_b.ipynb)"], "01_b": ["the end"], "02_c": ["x"]}
    assert link_problems(["00_a", "01_b", "02_c"], texts) == [
        "01_b does not end with a link to 02_c.ipynb",
        "00_a does not link 02_c.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_speaks_to_a_learner_who_has_only_this_course(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(source|original|seed) lesson", text, re.IGNORECASE)


# ----- links that work ---------------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(text: str, base: Path) -> list[str]:
    """Relative Markdown links in `text` whose file does not exist (relative to `base`)."""
    broken = []
    prose = re.sub(r"```.*?```|`[^`\n]*`", "", text, flags=re.DOTALL)  # code is not a link
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        path = target.split("#", 1)[0]
        if path and not (base / path).exists():
            broken.append(target)
    return broken


def test_every_relative_link_in_the_course_opens_a_file() -> None:
    found = {}
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        text = "\n".join(source(c) for c in read(path)["cells"] if c["cell_type"] == "markdown")
        found[path.name] = broken_links(text, NOTEBOOK_DIR)
    for path in sorted(NOTEBOOK_DIR.glob("*.md")):
        found[path.name] = broken_links(path.read_text(encoding="utf-8"), NOTEBOOK_DIR)
    found["README.md"] = broken_links(
        (REPO_ROOT / "README.md").read_text(encoding="utf-8"), REPO_ROOT
    )
    assert {name: links for name, links in found.items() if links} == {}


def test_link_check_catches_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.ipynb").write_text("{}")
    text = "[a](a.ipynb) [b](b.ipynb#part) [web](https://example.org) [here](#top) `[x](LINK)`"
    assert broken_links(text, tmp_path) == ["b.ipynb#part"]


def test_the_cheat_sheet_covers_every_knob_and_library() -> None:
    sheet = (NOTEBOOK_DIR / "cheatsheet.md").read_text(encoding="utf-8")
    for word in ("Temperature", "Top-k", "Top-p", "Beam search", "Seed", "min-p"):
        assert word in sheet, word
    for library in ("Hugging Face", "vLLM", "llama.cpp"):
        assert sheet.count(library) >= 2, library
    lessons = {p.name for p in NOTEBOOKS}
    assert {t for t in LINK.findall(sheet) if t.endswith(".ipynb")} <= lessons
