"""Tests for check_my_merge: correct merges pass, each natural slip fails with its own hint.

The buggy functions below are first attempts a learner writes at one BPE merge; each must fail
on a small case with the hint that names its slip. Correct functions written in other styles
must pass every case, as must the reference, `lessonlib.bpe.merge_pair`.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools

import pytest

from lessonlib.bpe import merge_pair
from lessonlib.paths import REPO_ROOT
from lessonlib.teaching.checkers import CheckResult, check_my_merge, merge_cases
from lessonlib.teaching.checkers import merge as merge_checker

# ----- correct merges in other styles -----------------------------------------------------------


def merge_with_a_skip_flag(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """A for loop that remembers to skip the symbol after a merge."""
    merged, skip = [], False
    for i, symbol in enumerate(symbols):
        if skip:
            skip = False
            continue
        if i + 1 < len(symbols) and (symbol, symbols[i + 1]) == pair:
            merged.append(symbol + symbols[i + 1])
            skip = True
        else:
            merged.append(symbol)
    return merged


def merge_by_splicing_a_copy(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Splices the pair into one symbol in a copy; after a splice the next index is already new."""
    out = list(symbols)
    i = 0
    while i < len(out) - 1:
        if out[i] == pair[0] and out[i + 1] == pair[1]:
            out[i : i + 2] = [pair[0] + pair[1]]
        i += 1
    return out


def merge_recursively(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Head and tail: the pair at the head joins, else the head stays."""
    if len(symbols) < 2:
        return list(symbols)
    if tuple(symbols[:2]) == pair:
        return [symbols[0] + symbols[1], *merge_recursively(symbols[2:], pair)]
    return [symbols[0], *merge_recursively(symbols[1:], pair)]


def load_solution():
    path = REPO_ROOT / "notebooks" / "solutions" / "11_tokens_and_real_models.py"
    spec = importlib.util.spec_from_file_location("solution_11", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.my_merge


@pytest.mark.parametrize(
    "fn",
    [merge_pair, merge_with_a_skip_flag, merge_by_splicing_a_copy, merge_recursively],
)
def test_correct_merges_pass(fn) -> None:
    result = check_my_merge(fn)
    assert result.passed, str(result)
    assert result.cases_run == len(merge_cases()) and str(result).startswith("All ")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_solution_and_the_reference_pass_other_seeds(seed: int) -> None:
    for fn in (load_solution(), merge_pair, merge_with_a_skip_flag):
        result = check_my_merge(fn, seed=seed)
        assert result.passed, str(result)


def test_the_solution_imports_only_the_standard_library() -> None:
    path = REPO_ROOT / "notebooks" / "solutions" / "11_tokens_and_real_models.py"
    imports = [line for line in path.read_text(encoding="utf-8").splitlines() if "import" in line]
    assert imports == [], imports


# ----- natural first attempts, each with one slip -----------------------------------------------


def merge_first_only(symbols, pair):
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == pair:
            return symbols[:i] + [pair[0] + pair[1]] + symbols[i + 2 :]
    return list(symbols)


def merge_for_loop_skip(symbols, pair):
    merged = []
    for i in range(len(symbols)):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 1
        else:
            merged.append(symbols[i])
    return merged


def merge_over_pairs(symbols, pair):
    """The first loop many write: over the pairs, so no skip and no last symbol."""
    merged = []
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i] + symbols[i + 1])
        else:
            merged.append(symbols[i])
    return merged


def merge_skips_too_far(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
        i += 1
    return merged


def merge_by_looking_at_neighbours(symbols, pair):
    """Drops a symbol when it and the one before form the pair: right unless runs overlap."""
    merged = []
    for i, symbol in enumerate(symbols):
        if i + 1 < len(symbols) and (symbol, symbols[i + 1]) == pair:
            merged.append(symbol + symbols[i + 1])
        elif i > 0 and (symbols[i - 1], symbol) == pair:
            continue
        else:
            merged.append(symbol)
    return merged


def merge_from_the_right(symbols, pair):
    merged, i = [], len(symbols) - 1
    while i >= 0:
        if i > 0 and (symbols[i - 1], symbols[i]) == pair:
            merged.insert(0, pair[0] + pair[1])
            i -= 2
        else:
            merged.insert(0, symbols[i])
            i -= 1
    return merged


def merge_parts_swapped(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(symbols[i + 1] + symbols[i])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def merge_stops_early(symbols, pair):
    merged, i = [], 0
    while i < len(symbols) - 2:
        if (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged + symbols[i:]


def merge_loses_the_last_symbol(symbols, pair):
    merged, i = [], 0
    while i < len(symbols) - 1:
        if (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def merge_in_place(symbols, pair):
    i = 0
    while i < len(symbols) - 1:
        if (symbols[i], symbols[i + 1]) == pair:
            symbols[i : i + 2] = [pair[0] + pair[1]]
        i += 1
    return symbols


def merge_deleting_while_walking(symbols, pair):
    for i in range(len(symbols) - 1):
        if (symbols[i], symbols[i + 1]) == pair:
            symbols[i] = pair[0] + pair[1]
            del symbols[i + 1]
    return symbols


def merge_returns_a_tuple(symbols, pair):
    return tuple(merge_pair(symbols, pair))


def merge_as_a_generator(symbols, pair):
    yield from merge_pair(symbols, pair)


def merge_appends_the_pair(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair)
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def merge_in_either_order(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and {symbols[i], symbols[i + 1]} == set(pair):
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def merge_comparing_joined_text(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] + symbols[i + 1] == pair[0] + pair[1]:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def merge_by_replacing_text(symbols, pair):
    return " ".join(symbols).replace(f"{pair[0]} {pair[1]}", pair[0] + pair[1]).split()


def merge_without_a_bound_check(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return merged


def merge_returns_its_input_when_nothing_merges(symbols, pair):
    if pair not in itertools.pairwise(symbols):
        return symbols
    return merge_pair(symbols, pair)


def merge_forgets_the_others(symbols, pair):
    merged, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            merged.append(pair[0] + pair[1])
            i += 2
        else:
            i += 1
    return merged


BUGS = [
    (merge_first_only, 2, "only the first occurrence was merged"),
    (merge_for_loop_skip, 1, "did not move past the pair's second part"),
    (merge_over_pairs, 1, "did not move past the pair's second part"),
    (merge_skips_too_far, 1, "moved one symbol too far"),
    (merge_by_looking_at_neighbours, 5, "one symbol went into two merges"),
    (merge_from_the_right, 5, "you merged from the right"),
    (merge_parts_swapped, 1, "joined in the wrong order"),
    (merge_stops_early, 4, "the last pair was never looked at"),
    (merge_loses_the_last_symbol, 1, "the last symbol went missing"),
    (merge_in_place, 1, "leave the input list as it was"),
    (merge_deleting_while_walking, 1, "leave the input list as it was"),
    (merge_returns_a_tuple, 1, "return a list of str"),
    (merge_as_a_generator, 1, "return a list of str"),
    (merge_appends_the_pair, 1, "not the pair itself"),
    (merge_in_either_order, 9, "a pair is ordered"),
    (merge_comparing_joined_text, 12, "compare each of the two symbols with its own part"),
    (merge_by_replacing_text, 13, "the pair was found inside a longer symbol"),
    (merge_without_a_bound_check, 1, "read past the end of the list"),
    (merge_returns_its_input_when_nothing_merges, 8, "return a new list even when nothing merges"),
    (merge_forgets_the_others, 1, "walk the list from the left"),
]


@pytest.mark.parametrize(("fn", "case", "words"), BUGS, ids=[fn.__name__ for fn, _, _ in BUGS])
def test_each_slip_fails_with_the_hint_that_names_it(fn, case: int, words: str) -> None:
    result = check_my_merge(fn)
    text = str(result)
    assert not result.passed and not result.not_written, text
    assert result.cases_run == case, text
    assert text.startswith(f"merge: case {case} of {len(merge_cases())} fails"), text
    assert "  symbols  = " in text and "  pair     = " in text and "  expected = " in text
    assert "  Problem: " in text
    hint = text.split("  Hint: ", 1)[1]
    assert words in hint, text


def test_every_hint_is_reached_by_some_slip() -> None:
    """No hint in the checker is dead: each is what some first attempt above gets."""
    hints = [
        value
        for name, value in vars(merge_checker).items()
        if name.endswith("_HINT") and isinstance(value, str)
    ]
    reports = [str(check_my_merge(fn)) for fn, _, _ in BUGS]
    for hint in hints:
        start = hint.split("{", 1)[0][:40]  # the words before the first filled-in value
        assert any(start in report for report in reports), hint


def test_hints_name_this_case() -> None:
    swapped = str(check_my_merge(merge_parts_swapped))
    assert "('o', 'w') gives 'ow'" in swapped and "got      = ['l', 'wo', 'e', 'r']" in swapped
    either = str(check_my_merge(merge_in_either_order))
    assert "('o', 't') matches 'o' followed by 't', never 't' followed by 'o'" in either


def test_changing_the_input_is_caught_even_when_the_result_is_right() -> None:
    text = str(check_my_merge(merge_in_place))
    assert "got      = ['l', 'ow', 'e', 'r']" in text  # the right result...
    assert "changed its input list: it is now ['l', 'ow', 'e', 'r']" in text  # ...but in place
    text = str(check_my_merge(merge_deleting_while_walking))
    assert "changed its input list, then raised IndexError" in text


def test_a_result_of_another_type_is_named_and_its_words_are_stable() -> None:
    text = str(check_my_merge(merge_as_a_generator))
    assert "your function returned a generator, expected a list of str" in text
    assert "got      =" not in text and " at 0x" not in text
    assert "got      = ('l', 'ow', 'e', 'r')" in str(check_my_merge(merge_returns_a_tuple))


def test_an_error_is_reported_not_raised() -> None:
    text = str(check_my_merge(merge_without_a_bound_check))
    assert "Problem: your function raised IndexError: list index out of range." in text
    assert "got      =" not in text


def test_the_stub_gets_the_one_friendly_line() -> None:
    def my_merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
        """Stub."""
        raise NotImplementedError

    for hint in (True, False):
        result = check_my_merge(my_merge, hint=hint)
        assert result.not_written and not result.passed and result.cases_run == 0
        assert str(result) == (
            "not written yet: fill in the body of my_merge above, then run this cell again."
        )


def test_hint_false_keeps_the_report_and_drops_only_the_hint() -> None:
    with_hint = str(check_my_merge(merge_for_loop_skip))
    without = check_my_merge(merge_for_loop_skip, hint=False)
    assert isinstance(without, CheckResult) and not without.passed
    assert "Hint:" in with_hint and "Hint:" not in str(without)
    assert str(without) == "\n".join(
        line for line in with_hint.split("\n") if not line.startswith("  Hint: ")
    )


def test_the_checker_leaves_its_cases_alone() -> None:
    before = merge_cases()
    check_my_merge(merge_in_place)
    check_my_merge(merge_deleting_while_walking)
    assert merge_cases() == before


def test_cases_cover_the_edges_and_are_deterministic() -> None:
    cases = merge_cases()
    assert cases == merge_cases() and cases != merge_cases(seed=1)
    assert len(cases) == len(merge_cases(n_random=0)) + 40
    hand = merge_cases(n_random=0)
    symbols_and_pairs = {(case.symbols, case.pair) for case in hand}
    assert (("a", "a", "a"), ("a", "a")) in symbols_and_pairs
    assert (("a", "a", "a", "a"), ("a", "a")) in symbols_and_pairs
    assert any(not case.symbols for case in hand) and any(len(case.symbols) == 1 for case in hand)
    assert any(len(case.pair[0]) > 1 and len(case.pair[1]) > 1 for case in hand)
    # The pair at the start and at the end; a pair that never occurs; (y, x) without (x, y).
    assert any(case.symbols[:2] == case.pair for case in hand)
    assert any(len(case.symbols) > 2 and case.symbols[-2:] == case.pair for case in hand)
    assert any(
        case.pair[::-1] in itertools.pairwise(case.symbols)
        and case.pair not in itertools.pairwise(case.symbols)
        for case in hand
    )
    # Most random cases merge something, and some merge nothing.
    random_cases = cases[len(hand) :]
    merges = [merge_pair(case.symbols, case.pair) != list(case.symbols) for case in random_cases]
    assert sum(merges) >= len(random_cases) // 2 and not all(merges)


def test_the_checker_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="fn must be a function"):
        check_my_merge("my_merge")
    with pytest.raises((TypeError, ValueError), match="seed"):
        check_my_merge(merge_pair, seed=-1)


def test_the_slips_are_written_as_a_learner_would() -> None:
    """Each first attempt is a plain function of (symbols, pair): no helper from the checker."""
    for fn, _, _ in BUGS:
        assert list(inspect.signature(fn).parameters) == ["symbols", "pair"]
