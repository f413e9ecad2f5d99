"""Every "Build it yourself" exercise: its stub, its solution and its find-the-bug attempt.

A notebook's exercise is a code cell tagged `exercise` that defines a stub `my_...` function
(docstring, the steps as comments, `raise NotImplementedError`) and runs its checker; its
solution is the function of the same name in `notebooks/solutions/<notebook>.py`. A cell
tagged `exercise-bug` shows a common first attempt for the learner to fix, under a name of its
own, with the checker's report but not its hint (folded in the notebook). Here the stub must
get the checker's "not written yet" line (also in the saved output), the solution must pass,
and each attempt must fail with the hint that names its bug. The classic bugs of each checker
are in tests/test_checkers.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import pytest
import torch

from lessonlib.checkpoint import load_model
from lessonlib.paths import REPO_ROOT
from lessonlib.teaching.checkers import (
    CheckResult,
    check_my_accept_or_resample,
    check_my_greedy,
    check_my_merge,
    check_my_min_p,
    check_my_temperature,
    check_my_top_k,
    check_my_top_p,
)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
SOLUTION_DIR = NOTEBOOK_DIR / "solutions"


@cache
def shipped_model() -> tuple[Any, Any]:
    return load_model()


def run_greedy_checker(fn: Callable) -> CheckResult:
    model, tokenizer = shipped_model()
    return check_my_greedy(fn, model=model, tokenizer=tokenizer)


@dataclass(frozen=True)
class Exercise:
    notebook: str
    check: Callable[[Callable], CheckResult]
    # Words the hint must show for each find-the-bug attempt, by the attempt's first line.
    bug_hints: tuple[str, ...] = ()


EXERCISES = {
    "my_greedy": Exercise("01_greedy_loops", run_greedy_checker, ("stop when the model picks",)),
    "my_temperature": Exercise("02_temperature", check_my_temperature),
    "my_top_k": Exercise("03_top_k", check_my_top_k, ("each row has its own k-th largest value",)),
    "my_top_p": Exercise("04_nucleus", check_my_top_p),
    "my_accept_or_resample": Exercise("10_speculative_decoding", check_my_accept_or_resample),
    "my_merge": Exercise(
        "11_tokens_and_real_models", check_my_merge, ("did not move past the pair's second part",)
    ),
    "my_min_p": Exercise(
        "09_beyond_top_p",
        check_my_min_p,
        ("compared the logits with min_p times the largest logit",),
    ),
}


def notebook_cells(stem: str, tag: str) -> list[dict]:
    notebook = json.loads((NOTEBOOK_DIR / f"{stem}.ipynb").read_text(encoding="utf-8"))
    return [
        cell
        for cell in notebook["cells"]
        if cell["cell_type"] == "code" and tag in cell.get("metadata", {}).get("tags", [])
    ]


def functions_in(code: str) -> dict[str, Callable]:
    """The functions a cell defines (only the definitions run, not the checker call)."""
    tree = ast.parse(code)
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    namespace: dict[str, Any] = {"torch": torch}
    code_object = compile(ast.Module(body=defs, type_ignores=[]), "<cell>", "exec")
    exec(code_object, namespace)  # noqa: S102 (our own notebook cells, to test them)
    return {node.name: namespace[node.name] for node in defs}


def solutions(stem: str) -> ModuleType:
    path = SOLUTION_DIR / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{stem}", path)
    assert spec is not None and spec.loader is not None, f"no solutions file {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise_cells() -> list[tuple[str, str, dict]]:
    found = []
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        for cell in notebook_cells(path.stem, "exercise"):
            for name in functions_in("".join(cell["source"])):
                found.append((path.stem, name, cell))
    return found


def test_every_listed_exercise_is_in_its_notebook() -> None:
    found = {(stem, name) for stem, name, _ in exercise_cells()}
    assert {(e.notebook, name) for name, e in EXERCISES.items()} <= found


@pytest.mark.parametrize(
    ("stem", "name", "cell"), exercise_cells(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_stub_is_a_stub_and_gets_the_friendly_line(stem: str, name: str, cell: dict) -> None:
    assert name in EXERCISES, f"{stem}: exercise {name} has no entry in EXERCISES"
    exercise = EXERCISES[name]
    assert exercise.notebook == stem
    code = "".join(cell["source"])
    stub = functions_in(code)[name]
    assert stub.__doc__, f"{name}: the stub needs a docstring"
    assert code.count("\n    # ") >= 2, f"{name}: write the steps as comments in the stub"
    assert "raise NotImplementedError" in code
    assert exercise.check.__name__ in code or "check_my_" in code, "the cell runs no checker"
    result = exercise.check(stub)
    assert result.not_written and str(result).startswith("not written yet"), str(result)
    saved = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
    assert "not written yet" in saved, f"{stem}: the saved output of the stub cell: {saved!r}"


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_the_solution_passes_its_checker(name: str) -> None:
    exercise = EXERCISES[name]
    solution = getattr(solutions(exercise.notebook), name)
    result = exercise.check(solution)
    assert result.passed, str(result)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_find_the_bug_attempt_fails_with_its_hint(name: str) -> None:
    exercise = EXERCISES[name]
    # An attempt has a name of its own, so that running its cell again never replaces the
    # learner's function; it is the one function its cell defines.
    attempts = []
    for cell in notebook_cells(exercise.notebook, "exercise-bug"):
        defined = functions_in("".join(cell["source"]))
        assert name not in defined, f"{exercise.notebook}: the attempt must not be called {name}"
        assert len(defined) == 1, f"{exercise.notebook}: an attempt cell defines one function"
        attempts.extend(defined.values())
    assert len(attempts) == len(exercise.bug_hints), (
        f"{exercise.notebook}: {len(attempts)} find-the-bug attempts of {name}, "
        f"{len(exercise.bug_hints)} expected hints"
    )
    for attempt, words in zip(attempts, exercise.bug_hints):
        result = exercise.check(attempt)
        assert not result.passed and not result.not_written
        assert words in str(result), str(result)


def test_find_the_bug_outputs_keep_their_hint_folded() -> None:
    for name, exercise in EXERCISES.items():
        for cell in notebook_cells(exercise.notebook, "exercise-bug"):
            saved = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
            assert "Problem:" in saved, f"{name}: the attempt's report is not saved"
            assert "Hint:" not in saved, f"{name}: the report shows the hint; use hint=False"
