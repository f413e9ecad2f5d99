"""lessonlib.truncation against Hugging Face transformers' warpers, pinned cases, and bad input.

transformers is a test-only dependency (requirements.txt): lessonlib never imports it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    EtaLogitsWarper,
    MinPLogitsWarper,
    TypicalLogitsWarper,
)

from lessonlib.truncation import filter_eta, filter_min_p, filter_typical

PROPERTY = settings(max_examples=200, deadline=None)
NEG_INF = float("-inf")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def float32_exact(value: float) -> float:
    """`value` rounded to the nearest float32, so that float32 and float64 mean the same number.

    EtaLogitsWarper stores epsilon as a float32 tensor even for float64 scores (see
    test_eta_differs_from_hugging_face_only_by_its_float32_epsilon); with an epsilon that float32
    represents exactly, both libraries compare against the same threshold.
    """
    return float(np.float32(value))


# rule name -> (lessonlib filter, the transformers warper for a setting, settings to draw).
RULES = {
    "min_p": (filter_min_p, MinPLogitsWarper, st.floats(0.001, 1.0)),
    # transformers accepts typical_p only below 1 (lessonlib's 1 is "off").
    "typical": (filter_typical, TypicalLogitsWarper, st.floats(0.001, 0.999)),
    "eta": (filter_eta, EtaLogitsWarper, st.floats(1e-5, 0.999).map(float32_exact)),
}


def hugging_face(rule: str, logits: torch.Tensor, setting: float) -> torch.Tensor:
    """transformers' output for (V,) or (B, V) logits (its warpers take (B, V) and ignore ids)."""
    rows = logits if logits.dim() == 2 else logits.unsqueeze(0)
    input_ids = torch.zeros((rows.shape[0], 1), dtype=torch.long)
    out = RULES[rule][1](setting)(input_ids, rows.clone())
    return out if logits.dim() == 2 else out[0]


def assert_matches_hugging_face(rule: str, logits: torch.Tensor, setting: float) -> None:
    """Same kept tokens (finite mask) and same values as transformers; input untouched."""
    before = logits.clone()
    ours = RULES[rule][0](logits, setting)
    theirs = hugging_face(rule, logits, setting)
    assert torch.equal(logits, before), "the filter modified its input"
    assert ours.shape == logits.shape and ours.dtype == logits.dtype
    assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs)), (rule, setting, logits)
    assert torch.equal(ours, theirs)
    kept = torch.isfinite(ours)
    assert torch.equal(ours[kept], logits[kept]), "kept logits must keep their values"
    # Every row keeps at least one token.
    assert kept.reshape(-1, logits.shape[-1]).any(dim=-1).all()


@st.composite
def logits_tensors(draw: st.DrawFn) -> torch.Tensor:
    """float32 or float64 logits of shape (V,) or (B, V), V in 1..60, some -inf, ties often.

    Hypothesis picks shape, dtype, style and seed; numpy fills the entries (drawing each entry
    through Hypothesis would be slow). Styles as in tests/test_sampling.py: "grid" (multiples of
    1/8, exact and often tied), "few" (one to three distinct values), "free", and "near"
    (neighbours a few ulps apart, where rounding differences would show).
    """
    batched = draw(st.booleans())
    rows = draw(st.integers(1, 8)) if batched else 1
    vocab_size = draw(st.integers(1, 60))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    style = draw(st.sampled_from(["grid", "few", "free", "near"]))
    neg_inf_share = draw(st.sampled_from([0.0, 0.3, 0.9]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (rows, vocab_size)
    if style == "grid":
        values = rng.integers(-160, 161, shape) / 8
    elif style == "few":
        values = rng.choice(rng.integers(-160, 161, rng.integers(1, 4)) / 8, shape)
    elif style == "free":
        values = rng.uniform(-20, 20, shape)
    else:
        base = dtype(rng.uniform(-20, 20))
        values = base + rng.integers(0, 4, shape).astype(dtype) * np.spacing(base)
    values = values.astype(dtype)
    masked = rng.random(shape) < neg_inf_share
    # One anchor per row stays finite so that every row has a distribution.
    masked[np.arange(rows), rng.integers(0, vocab_size, rows)] = False
    values[masked] = -np.inf
    logits = torch.from_numpy(values)
    return logits if batched else logits[0]


@pytest.mark.parametrize("rule", RULES)
@PROPERTY
@given(data=st.data())
def test_keeps_what_hugging_face_keeps_on_random_logits(rule, data):
    logits = data.draw(logits_tensors(), label="logits")
    setting = data.draw(RULES[rule][2], label=rule)
    assert_matches_hugging_face(rule, logits, setting)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", RULES)
def test_keeps_what_hugging_face_keeps_on_model_sized_batches(rule, dtype):
    """Seeded batches the size of the course's model (V = 50), peaked and flat, many settings."""
    generator = torch.Generator().manual_seed(14)
    for scale in (0.5, 2.0, 6.0):
        logits = torch.randn(64, 50, generator=generator, dtype=dtype) * scale
        for setting in (0.0003, 0.004, 0.05, 0.2, 0.5, 0.9, 0.99):
            assert_matches_hugging_face(rule, logits, float32_exact(setting))
            assert_matches_hugging_face(rule, logits[0], float32_exact(setting))


EDGE_CASES = {
    "all tied": [1.5] * 7,
    "two tied maxima": [2.0, 2.0, 0.0, -1.0, -1.0],
    "ties at the cut": [3.0, 1.0, 1.0, 1.0, 1.0, -2.0],
    "some -inf": [NEG_INF, 0.5, NEG_INF, 0.5, -1.0, NEG_INF],
    "one finite token": [NEG_INF, NEG_INF, 4.0, NEG_INF],
    "one token": [0.25],
    "very peaked": [30.0, 0.0, -1.0, -2.0],
    "very flat": [0.0, 1e-6, 2e-6, 3e-6, 4e-6],
}


@pytest.mark.parametrize("setting", [0.001, 0.1, 0.25, 0.5, 0.95])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", EDGE_CASES)
@pytest.mark.parametrize("rule", RULES)
def test_keeps_what_hugging_face_keeps_on_edge_cases(rule, case, dtype, setting):
    row = torch.tensor(EDGE_CASES[case], dtype=dtype)
    assert_matches_hugging_face(rule, row, float32_exact(setting))
    # The same row in a batch with other rows gives the same result for that row.
    batch = torch.stack([row, row.flip(0), torch.zeros_like(row)])
    assert_matches_hugging_face(rule, batch, float32_exact(setting))
    assert torch.equal(RULES[rule][0](batch, setting)[0], RULES[rule][0](row, setting))


def kept(filtered: torch.Tensor) -> list[int]:
    return torch.nonzero(torch.isfinite(filtered)).flatten().tolist()


def test_min_p_pinned_case():
    # Probabilities (0.5, 0.2, 0.15, 0.1, 0.05), min_p 0.25: the bar is 0.25 * 0.5 = 0.125.
    logits = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]).log()
    assert kept(filter_min_p(logits, 0.25)) == [0, 1, 2]
    # The bar scales with the top token: the same min_p keeps more of a flatter distribution.
    assert kept(filter_min_p(torch.zeros(5), 0.25)) == [0, 1, 2, 3, 4]
    # min_p = 1 keeps only the top token and its ties.
    assert kept(filter_min_p(torch.tensor([1.0, 3.0, 3.0, 2.0]), 1.0)) == [1, 2]


def test_min_p_depends_on_temperature_order():
    """Min-p before or after temperature keeps different sets (why libraries' orders matter)."""
    logits = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]).log()
    temperature = 2.0
    after = kept(filter_min_p(logits / temperature, 0.25))  # Hugging Face, vLLM
    before = kept(filter_min_p(logits, 0.25))  # llama.cpp's default chain
    assert before == [0, 1, 2]
    assert after == [0, 1, 2, 3, 4]


def test_typical_can_drop_the_top_token():
    # One token at 0.4 and ten at 0.06: the entropy (2.05 nats) is nearer the ten tokens'
    # surprisal (-log 0.06 = 2.81) than the top token's (-log 0.4 = 0.92).
    logits = torch.tensor([0.4] + [0.06] * 10).log()
    filtered = filter_typical(logits, 0.35)
    # The mass reaches 0.35 on the sixth of the ten tied tokens; its ties are kept too.
    assert kept(filtered) == list(range(1, 11))
    assert_matches_hugging_face("typical", logits, 0.35)


def test_eta_threshold_follows_the_entropy():
    epsilon = float32_exact(0.05)
    # Peaked: low entropy, so eta = epsilon and a token of probability 0.04 goes.
    peaked = torch.tensor([0.9, 0.06, 0.04]).log()
    assert kept(filter_eta(peaked, epsilon)) == [0, 1]
    # Nearly flat over 20 tokens: entropy near log 20, so eta = sqrt(0.05) * exp(-entropy) is
    # about 0.012, and a token of probability 0.013 (below epsilon) stays.
    flat = torch.cat([torch.full((19,), 0.0), torch.tensor([-1.386])])
    assert torch.softmax(flat, dim=-1)[-1] < epsilon
    assert kept(filter_eta(flat, epsilon)) == list(range(20))
    for logits in (peaked, flat):
        assert_matches_hugging_face("eta", logits, epsilon)


def test_eta_differs_from_hugging_face_only_by_its_float32_epsilon():
    """The one difference found: EtaLogitsWarper rounds epsilon to float32, even for float64.

    Here eta = epsilon = 0.1 (low entropy) and the second token's probability is 0.1 + 1e-12:
    lessonlib keeps it (>= 0.1); transformers compares with float32(0.1) = 0.10000000149 and
    drops it. Only probabilities within one float32 rounding of epsilon are affected.
    """
    logits = torch.tensor([0.9 - 1e-12, 0.1 + 1e-12], dtype=torch.float64).log()
    assert kept(filter_eta(logits, 0.1)) == [0, 1]
    assert kept(hugging_face("eta", logits, 0.1)) == [0]
    assert kept(filter_eta(logits, float32_exact(0.1))) == [0]


@pytest.mark.parametrize("rule", RULES)
def test_none_is_off_and_returns_a_copy(rule):
    logits = torch.tensor([[2.0, NEG_INF, -1.0], [0.0, 0.0, 5.0]])
    out = RULES[rule][0](logits, None)
    assert torch.equal(out, logits) and out is not logits
    out[0, 0] = 99.0
    assert logits[0, 0] == 2.0


def test_typical_mass_one_is_off():
    logits = torch.tensor([5.0, 0.0, -30.0, NEG_INF])
    assert torch.equal(filter_typical(logits, 1.0), logits)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(
    ("bad", "error", "fragment"),
    [
        (0, ValueError, "must be in (0, 1] or None, got 0"),
        (1.5, ValueError, "must be in (0, 1] or None, got 1.5"),
        (-0.1, ValueError, "must be in (0, 1] or None, got -0.1"),
        (float("nan"), ValueError, "must be in (0, 1] or None, got nan"),
        (True, TypeError, "must be a number in (0, 1] or None, got True of type bool"),
        ("0.5", TypeError, "must be a number in (0, 1] or None, got '0.5' of type str"),
    ],
)
def test_bad_setting_names_parameter_value_and_range(rule, bad, error, fragment):
    name = {"min_p": "min_p", "typical": "mass", "eta": "epsilon"}[rule]
    with pytest.raises(error) as raised:
        RULES[rule][0](torch.zeros(3), bad)
    assert str(raised.value) == f"{name} {fragment}"


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(
    ("bad", "error", "fragment"),
    [
        ([0.0, 1.0], TypeError, "logits must be a torch.Tensor of shape (V,) or (B, V), got list"),
        (torch.tensor([1, 2]), TypeError, "logits must have a floating dtype"),
        (torch.zeros(2, 3, 4), ValueError, "logits must have shape (V,) or (B, V), got shape"),
        (torch.zeros(2, 0), ValueError, "logits must not be empty, got shape (2, 0)"),
        (
            torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]),
            ValueError,
            "logits must be finite or -inf, got NaN at index (1, 0) of shape (2, 2)",
        ),
        (
            torch.tensor([0.0, float("inf")]),
            ValueError,
            "logits must be finite or -inf, got +inf at index (1,) of shape (2,)",
        ),
        (
            torch.tensor([[0.0, 1.0], [NEG_INF, NEG_INF]]),
            ValueError,
            "logits row 1 has no finite value (all -inf)",
        ),
    ],
)
def test_bad_logits_are_named(rule, bad, error, fragment):
    with pytest.raises(error) as raised:
        RULES[rule][0](bad, 0.5)
    assert fragment in str(raised.value)
