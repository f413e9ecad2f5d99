"""Text measures."""

from __future__ import annotations

import pytest

from lessonlib.metrics import distinct_n, find_cycle, repetition_rate


def test_finds_start_and_period_of_a_repeating_tail():
    text = "Once upon a time!" + "Mia ran. " * 5 + "Mia r"
    cycle = find_cycle(text)
    assert cycle is not None
    assert text[cycle.start :].startswith("Mia ran. ")
    assert cycle.period == len("Mia ran. ")
    assert cycle.start == len("Once upon a time!")
    assert cycle.repeats == pytest.approx((len(text) - cycle.start) / 9)


def test_the_cycle_starts_where_the_repetition_really_starts():
    # The character before the first "ab" is also 'b', so the tail starts one earlier.
    cycle = find_cycle("xyzb" + "ab" * 4)
    assert (cycle.start, cycle.period, cycle.unit) == (3, 2, "ba")


def test_prefers_the_shortest_period_on_ties():
    cycle = find_cycle("ab" * 6)
    assert (cycle.start, cycle.period) == (0, 2)


def test_no_cycle_in_text_that_does_not_repeat_enough():
    assert find_cycle("the cat sat on the mat") is None
    assert find_cycle("abcabc", min_repeats=3) is None
    assert find_cycle("abcabc", min_repeats=2).period == 3
    assert find_cycle("") is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_repeats must be an int >= 2, got 1"):
        find_cycle("aaa", min_repeats=1)
    with pytest.raises(TypeError, match="text must be a str"):
        find_cycle(["a"])


def test_repetition_rate_counts_ngrams_seen_before():
    assert repetition_rate("a b c d e f") == 0.0
    # 4-grams of "x y x y x y": (x y x y), (y x y x), (x y x y) -> one repeat out of three
    assert repetition_rate("x y x y x y") == pytest.approx(1 / 3)
    assert repetition_rate("Mia ran. " * 10, n=2) > 0.8
    assert repetition_rate("too short", n=4) == 0.0
    with pytest.raises(ValueError, match="n must be an int >= 1, got 0"):
        repetition_rate("a", n=0)


def test_distinct_n_pools_over_texts():
    assert distinct_n(["a b c", "d e f"], n=2) == 1.0
    assert distinct_n(["a b", "a b"], n=2) == 0.5
    assert distinct_n(["a"], n=2) == 0.0
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        distinct_n(["a"], n=-1)


def test_has_unit_accepts_every_rotation_of_the_repeating_unit_and_nothing_else():
    cycle = find_cycle("Once upon a time." + " Mia ran." * 4)
    assert cycle is not None and cycle.period == len(" Mia ran.")
    assert cycle.has_unit(" Mia ran.")
    assert cycle.has_unit(". Mia ran")  # the same cycle read from its full stop
    assert not cycle.has_unit(" Max ran.")  # same length, another sentence
    assert not cycle.has_unit(" Mia ran. Mia ran.")  # two units are not the unit
    assert not cycle.has_unit("Mia")  # a piece of the unit is not the unit
    with pytest.raises(TypeError, match="unit must be a str"):
        cycle.has_unit(None)
