"""Tests for lessonlib.analysis.sweeps: the regimes, sample scoring and the sweep itself."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import replace

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.sweeps import (
    SampleScores,
    format_trade_off,
    format_valid_variety,
    gap_in_se,
    sampler_sweep,
    score_samples,
    temperature_regimes,
    temperature_sweep,
)
from lessonlib.bigram import BIGRAM_SYMBOLS, BOUNDARY, load_bigram
from lessonlib.metrics import distinct_n, repetition_rate

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
    with pytest.raises(ValueError, match=r"logits must have shape \(V,\), got shape \(10, 100\)$"):
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
    lengths = [len(continuation), len(continuation), len(broken), len(loop)]
    # The standard error of the mean length: sample standard deviation over sqrt(n).
    assert scores.mean_length_se == pytest.approx(statistics.stdev(lengths) / 2)


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


def test_sampler_sweep_scores_any_setting_on_shared_random_numbers(bigram) -> None:
    from lessonlib.analysis.sweeps import sampler_sweep, setting_label

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
    assert "setting" in format_trade_off(rows).splitlines()[0]
    with pytest.raises(ValueError, match="unknown keys"):
        setting_label({"top_q": 0.5})
    table = format_valid_variety(rows).splitlines()
    assert table[0].split() == ["setting", "n", "valid", "(se)", "distinct-4", "(se)"]
    assert table[2].split()[:3] == ["top-k", "1", "6"] and len(table) == 4


def test_setting_labels_name_every_stage_penalty_and_library_order() -> None:
    from lessonlib.analysis.sweeps import setting_label
    from lessonlib.sampling import LIBRARY_ORDERS

    label = setting_label({
        "temperature": 2.0, "min_p": 0.1, "typical_p": 0.9, "eta_cutoff": 0.002,
        "repetition_penalty": 1.2, "order": LIBRARY_ORDERS["llama.cpp"],
    })  # fmt: skip
    assert label == "tau 2, min-p 0.1, typical 0.9, eta 0.002, repetition 1.2, llama.cpp order"
    assert setting_label({"order": ("top_k", "temperature")}) == "order top_k>temperature"


# ----- standard errors, the broken share, batches and the trade-off table ---------------------


def test_every_story_is_valid_broken_or_cut_off() -> None:
    story = tinytales.generate_stories(1, seed=5)[0]
    prompt, continuation = story[:60], story[60:]
    typo = continuation.replace("e", "q", 1)
    texts = [continuation, typo, continuation[:20], typo[:40], continuation]
    finished = [True, True, False, False, False]
    scores = score_samples(prompt, texts, finished, temperature=1.0)
    # valid: the first; broken: the typo (finished or not); cut off: the clean unfinished ones.
    assert scores.valid == pytest.approx(1 / 5)
    assert scores.broken == pytest.approx(2 / 5)
    assert scores.cut_off == pytest.approx(2 / 5)
    # Ending early, where the grammar cannot end, is an error too.
    early = score_samples(prompt, [continuation[:20]], [True], temperature=1.0)
    assert (early.valid, early.broken, early.cut_off) == (0.0, 1.0, 0.0)


def test_standard_errors_match_their_formulas() -> None:
    stories = tinytales.generate_stories(6, seed=8)
    loop = " Mia played with the ball." * 8
    texts = [*stories, loop, loop[:60]]
    finished = [True] * 6 + [False, False]
    scores = score_samples("", texts, finished, temperature=0.5)
    n = len(texts)
    assert scores.valid == pytest.approx(6 / 8)
    assert scores.valid_se == pytest.approx(math.sqrt(0.75 * 0.25 / n))
    per_story = [repetition_rate(text) for text in texts]
    mean = sum(per_story) / n
    spread = math.sqrt(sum((v - mean) ** 2 for v in per_story) / (n - 1))
    assert scores.repetition_se == pytest.approx(spread / math.sqrt(n))
    # Jackknife by hand: distinct-4 leaving out each text once.
    leave_one_out = [distinct_n(texts[:i] + texts[i + 1 :], n=4) for i in range(n)]
    centre = sum(leave_one_out) / n
    jackknife = math.sqrt((n - 1) / n * sum((v - centre) ** 2 for v in leave_one_out))
    assert scores.distinct_4_se == pytest.approx(jackknife) and scores.distinct_4_se > 0
    # One story: no spread to measure (a share's binomial error is 0 by its formula).
    single = score_samples("", stories[:1], [True], temperature=1.0)
    assert math.isnan(single.repetition_se) and math.isnan(single.distinct_4_se)
    assert single.valid_se == 0.0


def test_batches_are_seeded_apart_and_shared_by_settings(bigram) -> None:
    model, tokenizer = bigram
    common = {"prompt": "", "max_new_tokens": 10}

    def texts(samples: int, seed: int, batch_size: int | None) -> tuple[str, ...]:
        rows = sampler_sweep(
            model, tokenizer, settings=[{"temperature": 1.5}], samples=samples, seed=seed,
            batch_size=batch_size, **common,
        )  # fmt: skip
        return rows[0].texts

    batched = texts(12, 7, 4)
    assert len(batched) == 12 and texts(12, 7, 4) == batched
    # Batch 0 is seeded with the seed itself: the unbatched draw of its size.
    assert batched[:4] == texts(4, 7, None)
    # Later batches have seeds of their own: not a copy of batch 0, nor batch 0 of seed 8.
    assert batched[4:8] != batched[:4] and batched[4:8] != texts(4, 8, None)
    assert set(texts(12, 8, 4)[:4]) != set(batched[4:8])
    # Every setting of one call starts again from the same batch seeds.
    twice = sampler_sweep(
        model, tokenizer, settings=[{"temperature": 1.5}, {"top_k": None, "temperature": 1.5}],
        samples=12, seed=7, batch_size=4, **common,
    )  # fmt: skip
    assert twice[0].texts == twice[1].texts == batched
    greedy = sampler_sweep(
        model, tokenizer, settings=[{"temperature": 0}], samples=5, batch_size=2, seed=0, **common
    )[0]
    assert greedy.samples == 5 and len(set(greedy.texts)) == 1


def test_progress_bar_changes_nothing_but_the_display(bigram, capsys) -> None:
    model, tokenizer = bigram
    kwargs = {"prompt": "", "temperatures": [0.5, 1.0], "samples_per_temperature": 6}
    kwargs |= {"max_new_tokens": 8, "seed": 1, "batch_size": 4}
    quiet = temperature_sweep(model, tokenizer, **kwargs)
    shown = temperature_sweep(model, tokenizer, progress=True, **kwargs)
    assert [row.texts for row in quiet] == [row.texts for row in shown]
    assert "stories drawn" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1 or None, got 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int >= 1 or None, got 2.5"),
        ({"samples": True}, TypeError, "samples must be an int >= 1, got True"),
        ({"samples": 0}, ValueError, "samples must be an int >= 1, got 0"),
    ],
)
def test_sampler_sweep_names_a_bad_count(bigram, kwargs, error, words) -> None:
    model, tokenizer = bigram
    arguments = {"prompt": "", "settings": [{}], "samples": 2, "max_new_tokens": 3, "seed": 0}
    with pytest.raises(error, match=re.escape(words)):
        sampler_sweep(model, tokenizer, **(arguments | kwargs))


def test_format_trade_off_shows_each_share_with_its_error() -> None:
    story = tinytales.generate_stories(1, seed=2)[0]
    rows = [
        score_samples("", [story, story[:30]], [True, False], temperature=0.3),
        score_samples("", [story, "Once upon a tqme"], [True, True], temperature=2.0),
    ]
    lines = format_trade_off(rows).splitlines()
    assert len(lines) == 3
    assert lines[0].split()[:4] == ["tau", "n", "valid", "(se)"]
    cold = lines[1].split()
    assert cold[:6] == ["0.30", "2", "0.50", "(0.35)", "0.00", "(0.00)"]
    assert cold[6:8] == ["0.50", "(0.35)"]  # cut off: the clean unfinished half
    length_se = statistics.stdev([len(story), 30]) / math.sqrt(2)
    assert cold[-2:] == [f"{(len(story) + 30) / 2:.0f}", f"({length_se:.0f})"]
    hot = lines[2].split()
    assert hot[4:8] == ["0.50", "(0.35)", "0.00", "(0.00)"]
    labelled = format_trade_off([replace(rows[0], label="top-k 3")]).splitlines()
    assert labelled[0].split()[0] == "setting" and labelled[1].split()[0:2] == ["top-k", "3"]


def test_gap_in_se_divides_the_difference_by_its_standard_error() -> None:
    story = tinytales.generate_stories(1, seed=2)[0]
    good = score_samples("", [story] * 3 + ["Once upon a tqme"], [True] * 4, temperature=0.5)
    bad = score_samples("", [story] + ["Once upon a tqme"] * 3, [True] * 4, temperature=1.5)
    # valid 0.75 and 0.25, each with se sqrt(0.75 * 0.25 / 4).
    se = math.sqrt(0.75 * 0.25 / 4)
    assert gap_in_se(good, bad, "valid") == pytest.approx(0.5 / math.hypot(se, se))
    assert gap_in_se(bad, good, "broken") == pytest.approx(0.5 / math.hypot(se, se))
    assert gap_in_se(good, good, "repetition") == 0.0
    # Three long stories and one of 16 characters against the reverse: a length gap.
    length_se = statistics.stdev([len(story)] * 3 + [16]) / 2
    assert gap_in_se(good, bad, "length") == pytest.approx(
        (len(story) - 16) / 2 / math.hypot(length_se, length_se)
    )
    perfect = score_samples("", [story] * 2, [True] * 2, temperature=0.3)
    hopeless = score_samples("", ["Once upon a tqme"] * 2, [True] * 2, temperature=2.0)
    assert gap_in_se(perfect, hopeless, "valid") == math.inf
    assert gap_in_se(hopeless, perfect, "cut_off") == 0.0
    with pytest.raises(ValueError, match="measure must be one of"):
        gap_in_se(good, bad, "distinct_2")
    with pytest.raises(TypeError, match="second must be a SampleScores"):
        gap_in_se(good, 0.5, "valid")
