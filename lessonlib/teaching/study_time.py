"""How long a careful learner needs for a notebook, computed from the notebook itself.

Reading at `WORDS_PER_MINUTE` (not hints folded in `<details>`, not hidden cells), the cells' run
time as recorded, and a few minutes per widget, quiz and exercise. The main path ends at the first
"Going deeper", "For instructors" or "Answer key" heading; "Going deeper" is timed apart.
`python -m lessonlib.teaching.study_time` prints the table for every notebook.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = [
    "MINUTES_PER_EXERCISE",
    "MINUTES_PER_QUIZ",
    "MINUTES_PER_WIDGET",
    "WORDS_PER_MINUTE",
    "StudyTime",
    "rounded_minutes",
    "stated_minutes",
    "study_time",
]

WORDS_PER_MINUTE = 120  # careful reading of technical prose, code and output
MINUTES_PER_WIDGET = 3.0  # predict, move the controls, compare
MINUTES_PER_QUIZ = 1.5  # work the answer out, type it, read the feedback
MINUTES_PER_EXERCISE = 8.0  # write a function from its stub and run the checker

# Headings that end the main path; "Going deeper" is the part timed apart.
_DEEPER = "going deeper"
_AFTER_MAIN = (_DEEPER, "for instructors", "answer key")
_HEADING = re.compile(r"^#{1,3}\s+(.*)$", re.MULTILINE)
_DETAILS = re.compile(r"<details>.*?</details>", re.DOTALL | re.IGNORECASE)
_VIEW = re.compile(r"\b(\w+(?:Explorer|Viewer|Stepper|Widget))\(")
_QUIZ = re.compile(r"\bshow_quiz\(")
_STATED = re.compile(
    r"\*\*Time:\*\*\s*about (\d+) minutes(?:[^.\n]*?plus about (\d+) minutes)?", re.IGNORECASE
)


@dataclass(frozen=True)
class StudyTime:
    """The parts of a notebook's study time, and the totals in minutes."""

    words: int
    run_seconds: float
    widgets: int
    quizzes: int
    exercises: int

    @property
    def minutes(self) -> float:
        """Reading, running and doing, in minutes."""
        return (
            self.words / WORDS_PER_MINUTE
            + self.run_seconds / 60
            + self.widgets * MINUTES_PER_WIDGET
            + self.quizzes * MINUTES_PER_QUIZ
            + self.exercises * MINUTES_PER_EXERCISE
        )


def _words(text: str) -> int:
    return len(_DETAILS.sub(" ", text).split())


def _run_seconds(cell: dict) -> float:
    """Seconds the cell took when it was last executed (0 if not recorded)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return max(0.0, seconds)


def _output_text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append("".join(output.get("text", "")))
        elif "data" in output and "application/vnd.jupyter.widget-view+json" not in output["data"]:
            parts.append("".join(output["data"].get("text/plain", "")))
    return "\n".join(parts)


def _part(cell: dict, current: str) -> str:
    """Which part the cell opens or belongs to: "main", "deeper" or "other"."""
    if cell["cell_type"] == "markdown":
        for heading in _HEADING.findall("".join(cell["source"])):
            title = heading.strip().lower()
            if title.startswith(_DEEPER):
                return "deeper"
            if title.startswith(_AFTER_MAIN):
                return "other"
    return current


def study_time(notebook: dict) -> dict[str, StudyTime]:
    """The study time of the main path and of "Going deeper" of a notebook (parsed JSON)."""
    totals = {part: [0, 0.0, 0, 0, 0] for part in ("main", "deeper", "other")}
    part = "main"
    for cell in notebook["cells"]:
        part = _part(cell, part)
        source = "".join(cell["source"])
        total = totals[part]
        hidden = cell.get("metadata", {}).get("jupyter", {}).get("source_hidden", False)
        if cell["cell_type"] == "markdown":
            total[0] += _words(source)
            continue
        if cell["cell_type"] != "code":
            continue
        if not hidden:
            total[0] += _words(source) + _words(_output_text(cell))
        total[1] += _run_seconds(cell)
        total[2] += len({name for name in _VIEW.findall(source) if name != "QuizView"})
        total[3] += len(_QUIZ.findall(source))
        total[4] += "exercise" in cell.get("metadata", {}).get("tags", [])
    return {part: StudyTime(*totals[part]) for part in ("main", "deeper")}


def rounded_minutes(minutes: float) -> int:
    """Minutes as a learner is told them: up to the next 5 (at least 5), 0 for nothing."""
    return 0 if minutes <= 0 else max(5, 5 * math.ceil(minutes / 5 - 1e-9))


def stated_minutes(notebook: dict) -> tuple[int, int] | None:
    """(main, going deeper) minutes that the notebook's first cell states, or None."""
    first = "".join(notebook["cells"][0]["source"]) if notebook["cells"] else ""
    match = _STATED.search(first)
    if match is None:
        return None
    return int(match[1]), int(match[2] or 0)


def main(paths: list[str]) -> None:
    """Print the study time of each notebook given (default: notebooks/*.ipynb)."""
    from lessonlib.paths import REPO_ROOT

    files = [Path(p) for p in paths] or sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    print(
        f"{'notebook':28} {'words':>6} {'run s':>6} {'wid':>4} {'quiz':>4} {'ex':>3}"
        f" {'main min':>9} {'deeper min':>11}  stated"
    )
    for path in files:
        notebook = json.loads(path.read_text(encoding="utf-8"))
        times = study_time(notebook)
        m, d = times["main"], times["deeper"]
        print(
            f"{path.stem:28} {m.words:6d} {m.run_seconds:6.1f} {m.widgets:4d} {m.quizzes:4d}"
            f" {m.exercises:3d} {m.minutes:5.1f} ->{rounded_minutes(m.minutes):3d}"
            f" {d.minutes:6.1f} ->{rounded_minutes(d.minutes):3d}  {stated_minutes(notebook)}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
