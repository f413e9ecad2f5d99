"""Tests for lessonlib.temperature_sweep: the regimes, sample scoring and the sweep itself."""

from __future__ import annotations

import math

import pytest
import torch

from lessonlib import tinytales
from lessonlib.bigram import BIGRAM_SYMBOLS, BOUNDARY, load_bigram
from lessonlib.temperature_sweep import (
    SampleScores,
    format_scores,
    score_samples,
    temperature_regimes,
    temperature_sweep,
)

EXAMPLE = torch.tensor([2.0, 1.0, 0.0])


def test_regimes_of_the_worked_example() -> None:
    rows = temperature_regimes(EXAMPLE, [0, 0.5, 1, 2, 1e6])
    # The pinned values: p1 = 0.867, 0.665, 0.506 at tau = 0.5, 1, 2.
    assert [round(row.p_argmax, 3) for row in rows[1:4]] == [0.867, 0.665, 0.506]
    assert (rows[0].p_argmax, rows[0].entropy) == (1.0, 0.0)
    assert math.copysign(1.0, rows[0].entropy) == 1.0  # +0.0, not -0.0
    assert rows[-1].entropy == pytest.approx(math.log(3))
    assert rows[-1].p_argmax == pytest.approx(1 / 3, abs=1e-5)
    entropies = [row.entropy for row in rows]
    assert entropies == sorted(entropies)


def test_regimes_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="temperatures"):
        temperature_regimes(EXAMPLE, [])
    with pytest.raises(ValueError, match="temperatures"):
        temperature_regimes(EXAMPLE, [1.0, -0.5])
    with pytest.raises(ValueError, match="logits"):
        temperature_regimes(EXAMPLE[None], [1.0])


def test_regimes_report_the_shape_of_bad_logits_not_their_values() -> None:
    logits = torch.arange(1000.0).reshape(10, 100)
    with pytest.raises(
        ValueError, match=r"logits must be .* shape \(V,\).* got shape \(10, 100\)$"
    ):
        temperature_regimes(logits, [1.0])
    with pytest.raises(ValueError, match=r"got shape \(0,\)"):
        temperature_regimes(torch.zeros(0), [1.0])


def test_regimes_want_a_tensor_of_logits() -> None:
    with pytest.raises(
        TypeError, match=r"logits must be a torch\.Tensor of shape \(V,\), got list"
    ):
        temperature_regimes([2.0, 1.0, 0.0], [1.0])


@pytest.mark.parametrize(
    ("temperatures", "shown"),
    [
        (1.0, r"1\.0 \(float\)"),
        (2, r"2 \(int\)"),
        ("0.5", r"'0\.5' \(str\)"),
        (None, r"None \(NoneType\)"),
    ],
)
def test_regimes_want_a_sequence_of_temperatures(temperatures, shown) -> None:
    with pytest.raises(
        TypeError, match=rf"temperatures must be a non-empty sequence of numbers >= 0, got {shown}"
    ):
        temperature_regimes(EXAMPLE, temperatures)
    with pytest.raises(TypeError, match=r"temperatures\[1\] must be a real number >= 0"):
        temperature_regimes(EXAMPLE, [1.0, "hot"])


def test_score_samples_on_known_texts() -> None:
    story = tinytales.generate_stories(1, seed=3)[0]
    prompt, continuation = story[:50], story[50:]
    broken = continuation.replace("a", "q", 1)
    loop = " Mia played with the ball." * 5
    scores = score_samples(
        prompt,
        [continuation, continuation, broken, loop],
        [True, False, True, False],
        temperature=0.7,
    )
    assert scores.samples == 4 and scores.temperature == 0.7
    assert scores.valid == 0.25  # only the finished, unbroken story
    assert scores.finished == 0.5
    assert scores.looping == 0.25  # the loop; a story does not end in a repeating tail
    assert scores.mean_length == pytest.approx(
        (2 * len(continuation) + len(broken) + len(loop)) / 4
    )
    assert scores.texts[3] == loop
    assert 0 < scores.repetition < 1 and 0 < scores.distinct_2 < 1


def test_repetition_is_higher_for_a_loop() -> None:
    story = tinytales.generate_stories(1, seed=4)[0]
    plain = score_samples("", [story], [True], temperature=1.0)
    looped = score_samples(
        "", [story[:100] + " Mia played with the ball." * 6], [False], temperature=1.0
    )
    assert looped.repetition > plain.repetition
    assert plain.valid == 1.0 and looped.valid == 0.0


def test_score_samples_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="texts and finished"):
        score_samples("", ["a"], [True, False], temperature=1.0)
    with pytest.raises(ValueError, match="texts and finished"):
        score_samples("", [], [], temperature=1.0)


@pytest.fixture(scope="module")
def bigram():
    return load_bigram()


def test_sweep_is_reproducible_and_sized(bigram) -> None:
    model, tokenizer = bigram
    settings = {"temperatures": [0.5, 2.0], "samples_per_temperature": 16, "max_new_tokens": 12}
    first = temperature_sweep(model, tokenizer, prompt="", seed=1, **settings)
    again = temperature_sweep(model, tokenizer, prompt="", seed=1, **settings)
    other = temperature_sweep(model, tokenizer, prompt="", seed=2, **settings)
    assert [row.temperature for row in first] == [0.5, 2.0]
    assert all(isinstance(row, SampleScores) and row.samples == 16 for row in first)
    assert [row.texts for row in first] == [row.texts for row in again]
    assert [row.texts for row in first] != [row.texts for row in other]
    # Names are not TinyTales stories.
    assert all(row.valid == 0.0 for row in first)


def test_greedy_row_is_one_continuation_repeated(bigram) -> None:
    model, tokenizer = bigram
    (row,) = temperature_sweep(
        model,
        tokenizer,
        prompt="",
        temperatures=[0],
        samples_per_temperature=5,
        max_new_tokens=30,
        seed=0,
    )
    assert row.samples == 5 and len(set(row.texts)) == 1
    # Greedy by hand: follow the bigram's most likely next symbol from the boundary.
    expected, symbol = "", BOUNDARY
    for _ in range(30):
        symbol = BIGRAM_SYMBOLS[int(model.probs(symbol).argmax())]
        if symbol == BOUNDARY:
            break
        expected += symbol
    assert row.texts[0] == expected
    assert row.finished == float(len(expected) < 30)


def test_sweep_rejects_bad_sizes(bigram) -> None:
    model, tokenizer = bigram
    with pytest.raises(ValueError, match="samples_per_temperature"):
        temperature_sweep(
            model,
            tokenizer,
            prompt="",
            temperatures=[1.0],
            samples_per_temperature=0,
            max_new_tokens=5,
            seed=0,
        )
    with pytest.raises(ValueError, match="temperatures"):
        temperature_sweep(
            model,
            tokenizer,
            prompt="",
            temperatures=[math.inf],
            samples_per_temperature=2,
            max_new_tokens=5,
            seed=0,
        )


def test_format_scores_is_one_line_per_row() -> None:
    rows = [
        score_samples("", ["a b c"], [True], temperature=0.3),
        score_samples("", ["a b c", "d e"], [True, False], temperature=1.5),
    ]
    lines = format_scores(rows).splitlines()
    assert len(lines) == 3 and "valid" in lines[0] and "distinct-2" in lines[0]
    assert lines[1].split()[0] == "0.30" and lines[2].split()[0] == "1.50"
    assert lines[2].split()[2] == "0.50"  # finished share


def test_sampler_sweep_scores_any_setting_on_shared_random_numbers(bigram) -> None:
    from lessonlib.temperature_sweep import sampler_sweep, setting_label

    model, tokenizer = bigram
    settings = [{"temperature": 1.0}, {"top_k": 1}, {"top_p": 0.5, "temperature": 0.7}]
    rows = sampler_sweep(
        model, tokenizer, prompt="", settings=settings, samples=6, max_new_tokens=12, seed=3
    )
    assert [row.label for row in rows] == ["tau 1", "top-k 1", "top-p 0.5, tau 0.7"]
    # top-k 1 is greedy: every sample is the same text.
    assert len(set(rows[1].texts)) == 1
    # The same seed and setting give the same draws as temperature_sweep at tau = 1.
    plain = temperature_sweep(
        model,
        tokenizer,
        prompt="",
        temperatures=[1.0],
        samples_per_temperature=6,
        max_new_tokens=12,
        seed=3,
    )
    assert plain[0].texts == rows[0].texts and plain[0].label == ""
    assert 0 <= rows[0].valid_se <= 0.5 / 6**0.5 + 1e-12
    assert "setting" in format_scores(rows).splitlines()[0]
    with pytest.raises(ValueError, match="unknown keys"):
        setting_label({"top_q": 0.5})
