"""Greedy runs of every hero under penalties (lessonlib.analysis.repetition)."""

from __future__ import annotations

import pytest

from lessonlib import tinytales
from lessonlib.analysis.repetition import (
    HeroRuns,
    first_error,
    format_hero_runs,
    greedy_hero_runs,
    hero_prompt,
)
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import StubModel

TOKENIZER = CharTokenizer(tinytales.ALPHABET, boundary=tinytales.END)
VALID = tinytales.generate_stories(1, seed=5)[0]


def test_first_error_names_the_first_impossible_character():
    assert first_error(VALID, True) is None
    assert first_error(VALID[:40], False) is None  # a prefix that may still go on
    broken = hero_prompt("Mia") + " q"
    assert first_error(broken, False) == len(broken) - 1
    # Every character fits, but a story cannot end after its opening.
    assert first_error(hero_prompt("Mia"), True) == len(hero_prompt("Mia"))


def test_counts_follow_their_definitions():
    opening = (
        " Tom had a little dog and a red ball. One day, Tom and the dog went to the park and met "
        "Mia. Mia said, 'Hello, Tom! I like your dog.'"
    )
    loop = hero_prompt("Tom") + opening + " Tom played with the ball." * 4
    runs = HeroRuns("x", (VALID, loop, hero_prompt("Mia") + " q"), (True, False, False))
    assert (runs.runs, runs.valid, runs.looping, runs.broken) == (3, 1, 1, 1)
    table = format_hero_runs([runs])
    assert table.splitlines()[1].split()[:3] == ["x", "3", "1"]
    assert "0.33 (0.27)" in table


def test_greedy_runs_cover_every_hero_and_the_penalty_changes_them():
    model, heroes = StubModel(), ("Mia", "Tom", "Lily")
    plain, penalized = greedy_hero_runs(
        model,
        TOKENIZER,
        settings=[{}, {"repetition_penalty": 3.0}],
        heroes=heroes,
        max_new_tokens=30,
    )
    assert (plain.label, penalized.label) == ("no penalty", "repetition 3")
    for runs in (plain, penalized):
        assert [story[: len(hero_prompt(h))] for story, h in zip(runs.stories, heroes)] == [
            hero_prompt(h) for h in heroes
        ]
    assert plain.stories != penalized.stories


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown keys"):
        greedy_hero_runs(StubModel(), TOKENIZER, settings=[{"penalty": 2.0}], heroes=("Mia",))
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        greedy_hero_runs(StubModel(), TOKENIZER, settings=[{}], max_new_tokens=0)
