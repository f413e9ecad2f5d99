"""Lesson 10's measurements (lessonlib.analysis.speculation) on small stand-in models."""

from __future__ import annotations

import pytest
import torch

from lessonlib.analysis.flops import forward_flops
from lessonlib.analysis.speculation import (
    acceptance_sweep,
    counted_work,
    first_characters,
    format_acceptance,
    format_first_characters,
    time_speculation,
)
from lessonlib.analysis.statistics import chi_square_p_value
from lessonlib.speculative import speculative_generate
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import lively_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER = CharTokenizer("\nabcdefg", boundary="\n")


def models():
    target = lively_gpt(TOKENIZER.vocab_size, seed=1, block_size=64)
    return target, lively_gpt(TOKENIZER.vocab_size, seed=2, block_size=64)


def test_a_draft_equal_to_the_target_is_always_kept():
    target, other = models()
    rows = acceptance_sweep(
        target,
        {"itself": target, "other": other},
        TOKENIZER,
        prompts=["ab", "cd", "ef"],
        settings=[("itself", 1.0, 3), ("other", 1.0, 3)],
        max_new_tokens=20,
    )
    itself, different = rows
    assert itself.acceptance.value == pytest.approx(1.0)
    assert itself.tokens_per_pass.value > 3  # k + 1 per pass but where a story ends
    assert different.acceptance.value < 0.9 and different.acceptance.standard_error > 0
    table = format_acceptance(rows).splitlines()
    assert table[1].split()[:3] == ["itself", "1.0", "3"] and len(table) == 3
    with pytest.raises(ValueError, match="settings name the draft 'missing'"):
        acceptance_sweep(
            target, {}, TOKENIZER, prompts=["ab"], settings=[("missing", 1.0, 2)], max_new_tokens=5
        )


def test_counted_work_adds_every_pass():
    target, draft = models()
    run = speculative_generate(
        target, draft, "ab", tokenizer=TOKENIZER, k=2, max_new_tokens=12,
        stop_at_boundary=False, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    work = counted_work(run, target=target.config, draft=draft.config, prompt_length=3)
    produced = sum(len(r.produced) for r in run.rounds)
    plain = sum(
        forward_flops(target.config, past_tokens=2 + i, new_tokens=1).total for i in range(produced)
    )
    assert work["plain"].total == plain
    # Each round's target pass reads 1 + len(drafted) positions: more arithmetic than plain.
    assert work["target"].total >= work["plain"].total
    assert work["draft"].total > 0


def test_first_characters_fit_the_exact_distribution_and_a_bias_does_not():
    target, draft = models()
    result = first_characters(target, draft, TOKENIZER, prompt="ab", runs=600, k=2)
    assert int(result.speculative.sum()) == int(result.plain.sum()) == 600
    assert min(result.p_values()) > 1e-3
    biased = result.speculative.clone()
    biased[int(result.exact.argmax())] += 150  # far more of the top character than chance allows
    assert chi_square_p_value(biased, result.exact) < 1e-3
    assert "chi-square p-value" in format_first_characters(result)


def test_chi_square_refuses_an_impossible_outcome_and_mismatched_sizes():
    probs = torch.tensor([0.5, 0.5, 0.0])
    assert chi_square_p_value(torch.tensor([10, 10, 1]), probs) == 0.0
    with pytest.raises(ValueError, match="same size"):
        chi_square_p_value(torch.tensor([1, 2]), probs)


def test_timing_line_names_both_runs_and_the_bare_pass():
    target, draft = models()
    line = time_speculation(target, draft, TOKENIZER, prompt="ab", k=2, max_new_tokens=10, rounds=1)
    assert line.startswith("plain ") and "one bare pass" in line and line.endswith("x")
