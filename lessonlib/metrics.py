"""Measures of generated text: where it starts repeating itself, and how often (on strings)."""

from __future__ import annotations

from dataclasses import dataclass

from lessonlib.validation import check_int


@dataclass(frozen=True)
class Cycle:
    """A repeating tail: text[start:] repeats a unit of `period` characters to the end."""

    start: int  # index of the first character of the repeating tail
    period: int  # length of the repeating unit, in characters
    unit: str  # the repeating unit, text[start:start + period]
    end: int  # length of the text: the tail runs from start to here

    @property
    def repeats(self) -> float:
        """How many times the unit fits in the tail (fractional when it is cut off)."""
        return self.tail_length / self.period

    @property
    def tail_length(self) -> int:
        """Characters from the start of the cycle to the end of the text."""
        return self.end - self.start

    def has_unit(self, unit: str) -> bool:
        """True if the tail repeats `unit`, read from any of its characters (a rotation of it)."""
        if not isinstance(unit, str):
            raise TypeError(f"unit must be a str, got {type(unit).__name__}")
        # The earliest start may fall anywhere inside the sentence that repeats: the same cycle
        # then reads as a rotation of it, which occurs in the unit written twice.
        return len(unit) == self.period and unit in self.unit * 2


def find_cycle(text: str, *, min_repeats: int = 3) -> Cycle | None:
    """The repeating tail of `text` that starts earliest (shortest period on ties), or None.

    A tail text[s:] repeats with period p when text[i] == text[i + p] for every i >= s;
    it counts only if it holds at least `min_repeats` whole units.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    min_repeats = check_int("min_repeats", min_repeats, low=2)
    n = len(text)
    best: tuple[int, int] | None = None
    for period in range(1, n // min_repeats + 1):
        start = n - period
        # Walk back while the character one period later matches.
        while start > 0 and text[start - 1] == text[start - 1 + period]:
            start -= 1
        if n - start >= min_repeats * period and (best is None or start < best[0]):
            best = (start, period)
    if best is None:
        return None
    start, period = best
    return Cycle(start=start, period=period, unit=text[start : start + period], end=n)


def _words(text: str) -> list[str]:
    return text.split()


def repetition_rate(text: str, *, n: int = 4) -> float:
    """Share of the word n-grams of `text` that already occurred earlier in it (0 = none repeat)."""
    n = check_int("n", n, low=1)
    words = _words(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


def distinct_n(texts: list[str], *, n: int = 2) -> float:
    """Distinct word n-grams divided by all word n-grams, pooled over `texts` (1 = no reuse)."""
    n = check_int("n", n, low=1)
    grams = [
        tuple(words[i : i + n]) for words in map(_words, texts) for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0
