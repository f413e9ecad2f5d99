"""Greedy decoding with penalties on repeated tokens: does the loop break, and what breaks instead.

Each hero of TinyTales gets the same opening; greedy decoding then runs under each penalty
setting. A run either loops (no end within the budget, a repeating tail), ends as a valid story,
or breaks the grammar. Scored exactly against the grammar, as in lessons 01 and 02.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lessonlib import tinytales
from lessonlib.analysis.statistics import share_se
from lessonlib.analysis.sweeps import setting_label
from lessonlib.generation import LanguageModel, generate
from lessonlib.metrics import find_cycle
from lessonlib.progress import progress_bar
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int

__all__ = ["HeroRuns", "format_hero_runs", "greedy_hero_runs", "hero_prompt"]


def hero_prompt(hero: str) -> str:
    """The opening every hero's run continues (lesson 01's)."""
    return f"Once upon a time, there was a little kid named {hero}."


@dataclass(frozen=True)
class HeroRuns:
    """Greedy runs of every hero under one penalty setting."""

    label: str
    stories: tuple[str, ...]  # prompt + continuation
    finished: tuple[bool, ...]

    @property
    def runs(self) -> int:
        """How many heroes ran."""
        return len(self.stories)

    @property
    def looping(self) -> int:
        """Runs that never ended and end in a repeating tail."""
        return sum(
            not done and find_cycle(story) is not None
            for story, done in zip(self.stories, self.finished)
        )

    @property
    def valid(self) -> int:
        """Runs that ended as a story the grammar can produce."""
        return sum(
            done and tinytales.is_valid_story(story)
            for story, done in zip(self.stories, self.finished)
        )

    @property
    def broken(self) -> int:
        """Runs with a character the grammar forbids."""
        return sum(
            first_error(story, done) is not None for story, done in zip(self.stories, self.finished)
        )


def first_error(story: str, finished: bool) -> int | None:
    """Index of the first character no story can have there, or None (len(story) if the end is)."""
    possible = tinytales.longest_possible_prefix(story)
    if possible < len(story):
        return possible
    if finished and not tinytales.is_valid_story(story):
        return len(story)  # every character fits, but the story may not end here
    return None


def greedy_hero_runs(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    settings: Sequence[Mapping[str, float]],
    heroes: Sequence[str] = tinytales.WORDS["names"],
    max_new_tokens: int = 400,
    progress: bool = False,
) -> list[HeroRuns]:
    """Greedy runs of every hero's opening under each penalty setting (keywords of `generate`)."""
    check_int("max_new_tokens", max_new_tokens, low=1)
    labels = [setting_label(setting) if setting else "no penalty" for setting in settings]
    # Openings of equal length share a batch (generate needs equal lengths).
    by_length: dict[int, list[str]] = {}
    for hero in heroes:
        by_length.setdefault(len(hero), []).append(hero)
    bar = progress_bar(total=len(settings) * len(heroes), unit="run", show=progress)
    results = []
    for setting, label in zip(settings, labels):
        stories, finished = {}, {}
        for group in by_length.values():
            prompts = [hero_prompt(hero) for hero in group]
            runs = generate(
                model, prompts, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                temperature=0, **setting,
            )  # fmt: skip
            for hero, prompt, text, done in zip(group, prompts, runs.texts, runs.finished):
                stories[hero], finished[hero] = prompt + text, done
            bar.update(len(group))
        results.append(
            HeroRuns(
                label=label,
                stories=tuple(stories[hero] for hero in heroes),
                finished=tuple(finished[hero] for hero in heroes),
            )
        )
    bar.close()
    return results


def format_hero_runs(rows: Sequence[HeroRuns]) -> str:
    """A table: per setting, how many runs loop, end valid, break the grammar (share +- se)."""
    width = max([7] + [len(row.label) for row in rows])
    lines = [f"{'setting':>{width}} {'runs':>4} {'loop':>4} {'valid (se)':>13} {'broken':>6}"]
    for row in rows:
        share = row.valid / row.runs
        lines.append(
            f"{row.label:>{width}} {row.runs:>4} {row.looping:>4} "
            f"{share:>6.2f} ({share_se(share, row.runs):.2f}) {row.broken:>6}"
        )
    return "\n".join(lines)
