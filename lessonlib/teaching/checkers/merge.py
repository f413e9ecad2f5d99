"""The BPE merge exercise: a learner's `my_merge` against `lessonlib.bpe.merge_pair`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lessonlib.bpe import merge_pair
from lessonlib.teaching.checkers.engine import CheckResult, _not_written
from lessonlib.validation import check_int

_NAME = "merge"
# Symbols for the random cases: single characters, a two-character symbol spelled like a pair
# ("ab" = "a" + "b") and a byte-level word start ('Ġ' is a space), so that a pair must match whole
# symbols in order.
_RANDOM_SYMBOLS = ("a", "b", "ab", "Ġa")
_MAX_RANDOM_LENGTH = 8


@dataclass(frozen=True)
class MergeCase:
    """One input for the learner's merge: the symbols, the pair to join, what the case probes."""

    symbols: tuple[str, ...]
    pair: tuple[str, str]
    note: str = ""


# Hand-made cases first, so that the first failure is small and readable. The first has a pair
# whose two parts differ, in the middle of the word, so that it tells apart most of the slips.
_HAND_CASES = (
    (("l", "o", "w", "e", "r"), ("o", "w"), "one occurrence in the middle"),
    (("b", "a", "n", "a", "n", "a"), ("a", "n"), "two occurrences: both are merged"),
    (("t", "h", "e"), ("t", "h"), "the pair at the start"),
    (("t", "h", "e"), ("h", "e"), "the pair at the end: the last two symbols"),
    (("a", "a", "a"), ("a", "a"), "an overlapping run: the first two join, the third stays"),
    (("a", "a", "a", "a"), ("a", "a"), "a run of four: two merges, no symbol used twice"),
    (("Ġt", "he", "Ġc", "at"), ("Ġt", "he"), "parts of several characters ('Ġ' is a space)"),
    (("c", "a", "t"), ("d", "o"), "the pair does not occur: the symbols come back unchanged"),
    (("t", "o", "p"), ("o", "t"), "'t o' occurs, but the pair is ('o', 't'): nothing merges"),
    ((), ("a", "b"), "an empty list"),
    (("a",), ("a", "a"), "a single symbol"),
    (("ab", "c"), ("a", "bc"), "'ab' 'c' spells the pair's text 'abc', but it is another pair"),
    (("ab", "c"), ("b", "c"), "'b' and 'c' are here, but 'b' only inside the symbol 'ab'"),
)


def merge_cases(*, seed: int = 0, n_random: int = 40) -> list[MergeCase]:
    """Hand-made and seeded random cases for a merge: lists of up to 8 symbols from a small set."""
    seed = check_int("seed", seed, low=0)
    n_random = check_int("n_random", n_random, low=0)
    cases = [MergeCase(symbols, pair, note) for symbols, pair, note in _HAND_CASES]
    generator = torch.Generator().manual_seed(seed)

    def draw(high: int) -> int:
        return int(torch.randint(0, high, (), generator=generator))

    def symbol() -> str:
        return _RANDOM_SYMBOLS[draw(len(_RANDOM_SYMBOLS))]

    for _ in range(n_random):
        length = draw(_MAX_RANDOM_LENGTH + 1)
        symbols = tuple(symbol() for _ in range(length))
        if length >= 2 and draw(4) > 0:
            start = draw(length - 1)  # mostly a pair that occurs, so that merges happen
            pair = (symbols[start], symbols[start + 1])
        else:
            pair = (symbol(), symbol())
        cases.append(MergeCase(symbols, pair, "random"))
    return cases


# ----- hints -------------------------------------------------------------------------------------

_STEPS_HINT = (
    "walk the list from the left. Where a symbol and the next one are the pair's first and "
    "second parts, add the two joined into one symbol and move past both; otherwise add the "
    "symbol as it is and move on by one."
)
_FIRST_ONLY_HINT = (
    "only the first occurrence was merged. A merge joins every occurrence of the pair, so after "
    "the first one keep walking to the end of the list."
)
_MERGED_TWICE_HINT = (
    "one symbol went into two merges. In a run such as 'a a a' merged with ('a', 'a') the first "
    "two join and the third stays alone ('aa a'): a symbol that went into a merge is used up, so "
    "after a merge move past both of its parts."
)
_RIGHT_TO_LEFT_HINT = (
    "you merged from the right. Merges go left to right: in 'a a a' merged with ('a', 'a') the "
    "first two join and the third stays alone ('aa a', not 'a aa')."
)
_NOT_SKIPPED_HINT = (
    "after a merge you did not move past the pair's second part, so it was added again: the "
    "result holds both the merged symbol and its part. A merge uses up both symbols; go on with "
    "the one after them. (In a for loop over a range, adding to the loop variable skips nothing: "
    "the next turn takes the range's next value.)"
)
_SKIPPED_HINT = (
    "after a merge you moved one symbol too far, so the symbol right after the pair went "
    "missing. A merge uses up exactly two symbols; go on with the one after them."
)
_LAST_PAIR_HINT = (
    "the last pair was never looked at: your loop stops one position too early, so the last two "
    "symbols are never merged. A pair can start at any symbol that has a next one, the "
    "second-to-last included."
)
_LAST_SYMBOL_HINT = (
    "the last symbol went missing. A loop that looks at each symbol with the next one stops "
    "before the last symbol; when it is not part of a merge it must still be added to the result."
)
_EITHER_ORDER_HINT = (
    "a pair is ordered: ({first!r}, {second!r}) matches {first!r} followed by {second!r}, never "
    "{second!r} followed by {first!r}."
)
_ORDER_HINT = (
    "the two parts are joined in the wrong order. The merged symbol is the first part followed by "
    "the second: ({first!r}, {second!r}) gives {joined!r}."
)
_JOINED_TEXT_HINT = (
    "compare each of the two symbols with its own part of the pair, not their text joined: "
    "'ab' then 'c' and 'a' then 'bc' both spell 'abc', but they are different pairs."
)
_INSIDE_HINT = (
    "the pair was found inside a longer symbol. Work on the list of symbols, not on their text "
    "joined together: the pair's parts must be two whole neighbouring symbols."
)
_PAST_END_HINT = (
    "your function read past the end of the list: the last symbol has no next one, so look at a "
    "symbol together with the next one only while there is a next one."
)
_TYPE_HINT = (
    "return a list of str: start from an empty list and add each symbol to it, merged or not "
    "(not a tuple, a string or a generator)."
)
_PAIR_ITEM_HINT = (
    "a merged symbol is one str, the pair's two parts joined into one text, not the pair itself."
)
_IN_PLACE_HINT = (
    "leave the input list as it was and build the result in a new list: the caller still needs "
    "its symbols, and changing a list while walking it moves the symbols under your index."
)
_SAME_LIST_HINT = (
    "return a new list even when nothing merges: a caller who changes the result would "
    "change its own symbols too."
)


Matches = Callable[[str, str], bool]
Join = Callable[[str, str], str]


def _walk(
    symbols: list[str],
    pair: tuple[str, str],
    *,
    step: int = 2,
    first_only: bool = False,
    look_at_last_pair: bool = True,
    add_last_symbol: bool = True,
    matches: Matches | None = None,
    join: Join | None = None,
) -> list[str]:
    """A left-to-right merge: with its defaults the right one, each other setting a slip."""
    matches = matches or (lambda a, b: (a, b) == pair)
    join = join or (lambda a, b: a + b)
    # The walk visits the symbols before `stop`; a pair must lie whole before `end`.
    stop = len(symbols) if add_last_symbol else len(symbols) - 1
    end = len(symbols) if look_at_last_pair else len(symbols) - 1
    out, i, merged = [], 0, False
    while i < stop:
        if i + 1 < end and matches(symbols[i], symbols[i + 1]) and not (first_only and merged):
            out.append(join(symbols[i], symbols[i + 1]))
            i += step
            merged = True
        else:
            out.append(symbols[i])
            i += 1
    return out


def _from_the_right(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """The merge done from the right end: 'a a a' with ('a', 'a') gives 'a aa'."""
    out, i = [], len(symbols) - 1
    while i >= 0:
        if i >= 1 and (symbols[i - 1], symbols[i]) == pair:
            out.append(symbols[i - 1] + symbols[i])
            i -= 2
        else:
            out.append(symbols[i])
            i -= 1
    return out[::-1]


# The slips of the walk itself, one setting each: (name, the `_walk` keywords that make it).
_WALK_SLIPS = (
    ("no skip", {"step": 1}),
    ("skip too far", {"step": 3}),
    ("first only", {"first_only": True}),
    ("parts swapped", {"join": lambda a, b: b + a}),
    ("last pair", {"look_at_last_pair": False}),
    ("last symbol", {"add_last_symbol": False}),
)


def _walk_hint(slip: str, case: MergeCase, got: list[str], expected: list[str]) -> str:
    """The hint that names one slip of the walk, worded for this case."""
    first, second = case.pair
    if slip == "no skip":
        # Not moving past a merge shows as a merge made twice in a run ('a a a' gives 'aa aa a')
        # or, elsewhere, as the pair's second part added again after the merged symbol.
        twice = got.count(first + second) > expected.count(first + second)
        return _MERGED_TWICE_HINT if twice else _NOT_SKIPPED_HINT
    if slip == "parts swapped":
        return _ORDER_HINT.format(first=first, second=second, joined=first + second)
    return {
        "skip too far": _SKIPPED_HINT,
        "first only": _FIRST_ONLY_HINT,
        "last pair": _LAST_PAIR_HINT,
        "last symbol": _LAST_SYMBOL_HINT,
    }[slip]


def _matching_slips(case: MergeCase) -> list[tuple[list[str], str]]:
    """Slips in where a pair is found: what each returns on this case, and the hint naming it."""
    symbols, pair = list(case.symbols), case.pair
    first, second = pair
    either = _EITHER_ORDER_HINT.format(first=first, second=second)

    def either_order(a: str, b: str) -> bool:
        return (a, b) in (pair, (second, first))

    return [
        (_from_the_right(symbols, pair), _RIGHT_TO_LEFT_HINT),
        (_walk(symbols, pair, matches=either_order), either),
        (_walk(symbols, pair, matches=either_order, join=lambda a, b: first + second), either),
        (_walk(symbols, pair, matches=lambda a, b: a + b == first + second), _JOINED_TEXT_HINT),
        # Joining the symbols with spaces and replacing "first second" finds the pair inside
        # longer symbols (no symbol in these cases holds a space). Split on any whitespace, so
        # that an empty list stays empty: this slip shows first where the pair hides in a symbol.
        (" ".join(symbols).replace(f"{first} {second}", first + second).split(), _INSIDE_HINT),
    ]


def _slip_hint(case: MergeCase, got: list[str], expected: list[str]) -> str | None:
    """The hint of the slip that returns exactly `got` on this case, the simplest first, or None."""
    symbols = list(case.symbols)
    for slip, settings in _WALK_SLIPS:
        if _walk(symbols, case.pair, **settings) == got:
            return _walk_hint(slip, case, got, expected)
    for output, advice in _matching_slips(case):
        if output == got:
            return advice
    # Two slips of the walk at once: name the one listed first (fix it, and the checker names the
    # other), e.g. a loop over the pairs that neither moves past a merge nor adds the last symbol.
    for (slip, settings), (_, more) in itertools.combinations(_WALK_SLIPS, 2):
        if settings.keys() & more.keys():
            continue
        if _walk(symbols, case.pair, **settings, **more) == got:
            return _walk_hint(slip, case, got, expected)
    return None


# ----- the checker -------------------------------------------------------------------------------


def _difference(expected: list[str], got: list[str]) -> str:
    """Where two lists of symbols first differ, in words."""
    for position, (want, have) in enumerate(zip(expected, got)):
        if want != have:
            return f"the lists differ at position {position}: expected {want!r}, got {have!r}"
    return f"expected {len(expected)} symbols, got {len(got)}"


def _result_problem(
    case: MergeCase, expected: list[str], given: list[str], got: object
) -> tuple[str | None, str]:
    """(what is wrong, or None when the case passes; the hint) for a result of the learner's."""
    changed = given != list(case.symbols)
    if not isinstance(got, list):
        return f"your function returned a {type(got).__name__}, expected a list of str", _TYPE_HINT
    for position, item in enumerate(got):
        if not isinstance(item, str):
            advice = _PAIR_ITEM_HINT if isinstance(item, tuple | list) else _TYPE_HINT
            kind = type(item).__name__
            return f"item {position} of the result is a {kind}, {item!r}, expected a str", advice
    if got != expected:
        advice = _slip_hint(case, got, expected)
        if advice is None:
            advice = _IN_PLACE_HINT if changed else _STEPS_HINT
        return _difference(expected, got), advice
    if changed:
        return f"your function changed its input list: it is now {given!r}", _IN_PLACE_HINT
    if got is given:
        return "your function returned its input list itself, not a new list", _SAME_LIST_HINT
    return None, ""


def check_my_merge(fn: Callable, *, seed: int = 0, hint: bool = True) -> CheckResult:
    """Check `fn(symbols, pair) -> list[str]` against `lessonlib.bpe.merge_pair`, case by case.

    The result must equal the reference's (every occurrence joined, left to right, no symbol in
    two merges) and be a new list of str, with the input list left unchanged. The cases are the
    hand-made ones of `merge_cases`, then random ones drawn with `seed`. An exception in `fn` is
    reported, not raised; NotImplementedError (the notebook's stub) gets the one line NOT_WRITTEN.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    cases = merge_cases(seed=seed)
    for number, case in enumerate(cases, start=1):
        expected = merge_pair(case.symbols, case.pair)
        given = list(case.symbols)  # a copy: the case stays as it was, whatever fn does
        got = None
        try:
            got = fn(given, case.pair)
        except NotImplementedError:
            return _not_written(fn, _NAME)
        except Exception as error:  # noqa: BLE001 (the learner's bug is the report)
            problem = f"your function raised {type(error).__name__}: {error}"
            if given != list(case.symbols):
                # The error most likely follows from the list it changed while walking it.
                problem = f"your function changed its input list, then {problem[14:]}"
                advice = _IN_PLACE_HINT
            else:
                advice = _PAST_END_HINT if isinstance(error, IndexError) else _STEPS_HINT
        else:
            problem, advice = _result_problem(case, expected, given, got)
            if problem is None:
                continue
        lines = [
            f"{_NAME}: case {number} of {len(cases)} fails"
            + (f" ({case.note})." if case.note else ".")
        ]
        lines.append(f"  symbols  = {list(case.symbols)!r}")
        lines.append(f"  pair     = {case.pair!r}")
        lines.append(f"  expected = {expected!r}")
        # Only a result whose words do not change run to run (no generator's address).
        if isinstance(got, list | tuple | str):
            lines.append(f"  got      = {got!r}")
        lines.append(f"  Problem: {problem.rstrip('.')}.")
        lines.append(f"  Hint: {advice}")
        result = CheckResult(
            passed=False, cases_run=number, first_failure="\n".join(lines), name=_NAME
        )
        return result if hint else result.without_hint()
    return CheckResult(passed=True, cases_run=len(cases), first_failure=None, name=_NAME)
