"""lessonlib.penalties: the repetition penalty against Hugging Face transformers, the classic sign
bug caught, frequency/presence against a hand-written loop, and bad input.

transformers is a test-only dependency (requirements.txt): lessonlib never imports it.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from lessonlib.penalties import apply_frequency_presence, apply_repetition_penalty

NEG_INF = float("-inf")
BATCH_MISMATCH = (
    "previous_ids must have shape (B, T) with B = 2 (one row per row of logits of shape (2, 5))"
)


def hugging_face(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """RepetitionPenaltyLogitsProcessor's output for (V,) with (T,) ids or (B, V) with (B, T)."""
    processor = RepetitionPenaltyLogitsProcessor(penalty=float(penalty))
    if logits.dim() == 1:
        return processor(previous_ids.unsqueeze(0), logits.unsqueeze(0).clone())[0]
    return processor(previous_ids, logits.clone())


def divide_all(logits, previous_ids, penalty):
    """The rule as CTRL's paper prints it: every repeated logit divided by the penalty."""
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous_ids, True)
    return torch.where(seen, logits / penalty, logits)


def multiply_all(logits, previous_ids, penalty):
    """The other one-sign slip: every repeated logit multiplied by the penalty."""
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous_ids, True)
    return torch.where(seen, logits * penalty, logits)


def random_case(generator: torch.Generator, rows: int, vocab_size: int, steps: int, dtype):
    """Logits with zeros, both signs and some -inf, and ids with repeats."""
    logits = torch.randn(rows, vocab_size, generator=generator, dtype=dtype) * 3
    logits[torch.rand(rows, vocab_size, generator=generator) < 0.1] = 0.0
    logits[torch.rand(rows, vocab_size, generator=generator) < 0.1] = NEG_INF
    previous_ids = torch.randint(0, vocab_size, (rows, steps), generator=generator)
    return logits, previous_ids


def agrees_with_hugging_face(rule, seed: int = 0) -> bool:
    """Whether `rule` gives transformers' values on 50 seeded batches (used for the bug too)."""
    generator = torch.Generator().manual_seed(seed)
    for case in range(50):
        rows, steps = [(1, 1), (1, 30), (7, 12), (64, 40), (3, 0)][case % 5]
        dtype = [torch.float32, torch.float64][case % 2]
        logits, previous_ids = random_case(generator, rows, 50, steps, dtype)
        penalty = [1.3, 0.7, 2.0, 1.0, 5.5][case % 5]
        before = logits.clone()
        ours = rule(logits, previous_ids, penalty)
        if not torch.equal(logits, before):
            raise AssertionError("the rule modified its input")
        if ours.dtype != logits.dtype or not torch.equal(
            ours, hugging_face(logits, previous_ids, penalty)
        ):
            return False
    return True


def test_repetition_penalty_equals_hugging_face_on_random_batches():
    assert agrees_with_hugging_face(apply_repetition_penalty)


@pytest.mark.parametrize("bug", [divide_all, multiply_all])
def test_the_sign_bugs_fail_the_same_check(bug):
    assert not agrees_with_hugging_face(bug)


def test_dividing_every_logit_boosts_a_repeated_negative_one():
    logits = torch.tensor([2.0, -2.0, 1.0])
    previous_ids = torch.tensor([1])  # only the token with the negative logit appeared
    probability_before = torch.softmax(logits, dim=-1)[1]
    assert torch.softmax(divide_all(logits, previous_ids, 2.0), dim=-1)[1] > probability_before
    fixed = apply_repetition_penalty(logits, previous_ids, 2.0)
    assert fixed.tolist() == [2.0, -4.0, 1.0]
    assert torch.softmax(fixed, dim=-1)[1] < probability_before


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repetition_penalty_single_row_equals_hugging_face(dtype):
    generator = torch.Generator().manual_seed(1)
    logits, previous_ids = random_case(generator, 1, 50, 25, dtype)
    row, ids = logits[0], previous_ids[0]
    for penalty in (0.5, 1.0, 1.2, 3.0):
        ours = apply_repetition_penalty(row, ids, penalty)
        assert torch.equal(ours, hugging_face(row, ids, penalty))
        # A row in a batch gets what it gets alone.
        assert torch.equal(apply_repetition_penalty(logits, previous_ids, penalty)[0], ours)


def test_repetition_penalty_pinned_case():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.0, NEG_INF], [2.0, -2.0, 1.0, 0.0, NEG_INF]])
    # Row 0 repeats token 0 three times: penalised once. Row 1 has its own history.
    previous_ids = torch.tensor([[0, 0, 0, 3, 4], [1, 2, 2, 2, 2]])
    out = apply_repetition_penalty(logits, previous_ids, 2.0)
    assert out.tolist() == [[1.0, -2.0, 1.0, 0.0, NEG_INF], [2.0, -4.0, 0.5, 0.0, NEG_INF]]


def test_repetition_penalty_one_and_empty_history_change_nothing():
    logits = torch.tensor([[2.0, -2.0, NEG_INF]])
    assert torch.equal(apply_repetition_penalty(logits, torch.tensor([[0, 1, 2]]), 1.0), logits)
    empty = torch.zeros((1, 0), dtype=torch.long)
    out = apply_repetition_penalty(logits, empty, 3.0)
    assert torch.equal(out, logits) and out is not logits


def frequency_presence_loop(logits, previous_ids, frequency, presence):
    """The additive rule written out token by token, one row at a time."""
    rows = logits.reshape(-1, logits.shape[-1]).tolist()
    histories = previous_ids.reshape(len(rows), -1).tolist()
    for row, history in zip(rows, histories):
        for token, count in Counter(history).items():
            row[token] = row[token] - frequency * count - presence
    return torch.tensor(rows, dtype=logits.dtype).reshape(logits.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frequency_presence_equals_a_loop(dtype):
    generator = torch.Generator().manual_seed(2)
    for rows, steps in [(1, 1), (1, 40), (8, 15), (32, 60), (4, 0)]:
        logits, previous_ids = random_case(generator, rows, 50, steps, dtype)
        for frequency, presence in [(0.5, 0.0), (0.0, 1.0), (0.3, 0.7), (-0.4, 2.0), (2.0, -2.0)]:
            before = logits.clone()
            ours = apply_frequency_presence(logits, previous_ids, frequency, presence)
            assert torch.equal(logits, before)
            assert ours.dtype == dtype
            expected = frequency_presence_loop(logits, previous_ids, frequency, presence)
            torch.testing.assert_close(ours, expected)
            # Single rows give what they give inside the batch.
            single = apply_frequency_presence(logits[0], previous_ids[0], frequency, presence)
            assert torch.equal(single, ours[0])


def test_frequency_presence_pinned_case():
    logits = torch.zeros(5)
    out = apply_frequency_presence(logits, torch.tensor([1, 1, 3]), frequency=0.5, presence=1.0)
    assert out.tolist() == [0.0, -2.0, 0.0, -1.5, 0.0]
    assert torch.equal(apply_frequency_presence(logits, torch.tensor([1, 1, 3]), 0.0, 0.0), logits)


@pytest.mark.parametrize(
    ("logits", "previous_ids", "error", "message"),
    [
        (
            torch.zeros(5),
            [1, 2],
            TypeError,
            "previous_ids must be a torch.Tensor of token ids, got list",
        ),
        (
            torch.zeros(5),
            torch.tensor([1.0, 2.0]),
            TypeError,
            "previous_ids must have an integer dtype (e.g. torch.long), got torch.float32",
        ),
        (
            torch.zeros(5),
            torch.tensor([True, False]),
            TypeError,
            "previous_ids must have an integer dtype (e.g. torch.long), got torch.bool",
        ),
        (
            torch.zeros(5),
            torch.zeros((1, 2), dtype=torch.long),
            ValueError,
            "previous_ids must have shape (T,) for logits of shape (V,), got (1, 2)",
        ),
        (
            torch.zeros(2, 5),
            torch.zeros(3, dtype=torch.long),
            ValueError,
            f"{BATCH_MISMATCH}, got (3,)",
        ),
        (
            torch.zeros(2, 5),
            torch.zeros((3, 4), dtype=torch.long),
            ValueError,
            f"{BATCH_MISMATCH}, got (3, 4)",
        ),
        (
            torch.zeros(2, 5),
            torch.tensor([[0, 1], [4, 5]]),
            ValueError,
            "previous_ids must be token ids in 0..4, got 5 at index (1, 1)",
        ),
        (
            torch.zeros(5),
            torch.tensor([0, -1]),
            ValueError,
            "previous_ids must be token ids in 0..4, got -1 at index (1,)",
        ),
        (
            torch.zeros(5, dtype=torch.long),
            torch.tensor([0]),
            TypeError,
            "logits must have a floating dtype (e.g. torch.float32), got torch.int64",
        ),
        (
            torch.zeros(1, 2, 5),
            torch.tensor([0]),
            ValueError,
            "logits must have shape (V,) or (B, V), got shape (1, 2, 5)",
        ),
    ],
)
@pytest.mark.parametrize(
    "apply",
    [
        lambda logits, ids: apply_repetition_penalty(logits, ids, 1.5),
        lambda logits, ids: apply_frequency_presence(logits, ids, 0.5, 0.5),
    ],
    ids=["repetition", "frequency_presence"],
)
def test_bad_tensors_are_named(apply, logits, previous_ids, error, message):
    with pytest.raises(error) as raised:
        apply(logits, previous_ids)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("penalty", "error", "message"),
    [
        (0, ValueError, "penalty must be a finite number > 0, got 0.0"),
        (-1.2, ValueError, "penalty must be a finite number > 0, got -1.2"),
        (float("inf"), ValueError, "penalty must be a finite number > 0, got inf"),
        (float("nan"), ValueError, "penalty must be a finite number > 0, got nan"),
        (True, TypeError, "penalty must be a real number > 0, got True of type bool"),
        (None, TypeError, "penalty must be a real number > 0, got None of type NoneType"),
        ("1.2", TypeError, "penalty must be a real number > 0, got '1.2' of type str"),
    ],
)
def test_bad_penalty_names_parameter_value_and_range(penalty, error, message):
    with pytest.raises(error) as raised:
        apply_repetition_penalty(torch.zeros(3), torch.tensor([0]), penalty)
    assert str(raised.value) == message


@pytest.mark.parametrize("name", ["frequency", "presence"])
@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        (2.5, ValueError, "must be a finite number in [-2, 2], got 2.5"),
        (-3, ValueError, "must be a finite number in [-2, 2], got -3.0"),
        (float("nan"), ValueError, "must be a finite number in [-2, 2], got nan"),
        (None, TypeError, "must be a real number in [-2, 2], got None of type NoneType"),
        (False, TypeError, "must be a real number in [-2, 2], got False of type bool"),
    ],
)
def test_bad_frequency_or_presence_names_parameter_value_and_range(name, value, error, fragment):
    settings = {"frequency": 0.0, "presence": 0.0, name: value}
    with pytest.raises(error) as raised:
        apply_frequency_presence(torch.zeros(3), torch.tensor([0]), **settings)
    assert str(raised.value) == f"{name} {fragment}"
