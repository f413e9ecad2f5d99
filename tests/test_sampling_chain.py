"""The sampler's chain of stages: its order, the libraries' orders, and parity with transformers."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    EtaLogitsWarper,
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from lessonlib.sampling import (
    DEFAULT_ORDER,
    LIBRARY_ORDERS,
    STAGES,
    apply_temperature,
    check_order,
    check_sampler,
    filter_top_k,
    filter_top_p,
    sample_next,
    sampling_probs,
    stage_by_stage,
)
from lessonlib.truncation import filter_eta, filter_min_p, filter_typical

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL_ON = {
    "temperature": 1.3,
    "top_k": 12,
    "top_p": 0.95,
    "min_p": 0.02,
    "typical_p": 0.97,
    "eta_cutoff": 0.002,
}


def hugging_face_probs(logits: torch.Tensor, settings: dict) -> torch.Tensor:
    """The probabilities transformers' sampling warpers give, in their fixed order."""
    warpers = LogitsProcessorList([
        TemperatureLogitsWarper(settings["temperature"]),
        TopKLogitsWarper(settings["top_k"]),
        TopPLogitsWarper(settings["top_p"]),
        MinPLogitsWarper(settings["min_p"]),
        TypicalLogitsWarper(settings["typical_p"]),
        EtaLogitsWarper(settings["eta_cutoff"]),
    ])  # fmt: skip
    input_ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
    return torch.softmax(warpers(input_ids, logits.clone()), dim=-1)


def test_the_default_order_is_hugging_faces_and_names_every_stage():
    assert DEFAULT_ORDER == STAGES == LIBRARY_ORDERS["Hugging Face"]
    assert set(LIBRARY_ORDERS) == {"Hugging Face", "vLLM", "llama.cpp"}
    for order in LIBRARY_ORDERS.values():
        assert check_order(order) == order
    # Temperature last only in llama.cpp's chain; min-p right after temperature in vLLM's.
    assert LIBRARY_ORDERS["llama.cpp"][-1] == "temperature"
    assert LIBRARY_ORDERS["vLLM"][:2] == ("temperature", "min_p")


@pytest.mark.parametrize("seed", range(20))
def test_every_stage_on_equals_transformers_warpers(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 80, generator=generator, dtype=torch.float64) * 3
    ours = sampling_probs(logits, **ALL_ON)
    theirs = hugging_face_probs(logits, ALL_ON)
    assert torch.equal(ours > 0, theirs > 0)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    # Several stages really cut something here, so the parity covers the chain, not one rule.
    assert (ours > 0).sum(dim=-1).lt(ALL_ON["top_k"]).any()


def test_the_chain_composes_the_public_filters_in_order():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 30, generator=generator) * 2
    by_hand = apply_temperature(logits, 1.3)
    by_hand = filter_eta(filter_typical(by_hand, 0.97), 0.002)
    by_hand = filter_min_p(filter_top_p(filter_top_k(by_hand, 12), 0.95), 0.02)
    order = ("temperature", "typical_p", "eta_cutoff", "top_k", "top_p", "min_p")
    ours = sampling_probs(logits, **ALL_ON, order=order)
    torch.testing.assert_close(ours, torch.softmax(by_hand, dim=-1))


def test_min_p_before_temperature_keeps_fewer_tokens_when_hot():
    # Probabilities (0.5, 0.3, 0.15, 0.05); min-p 0.2 keeps tokens >= 0.1 before heating (3), but
    # at tau 3 the distribution flattens and all four pass.
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    hot_first = sampling_probs(logits, temperature=3.0, min_p=0.2)
    hot_last = sampling_probs(logits, temperature=3.0, min_p=0.2, order=LIBRARY_ORDERS["llama.cpp"])
    assert int((hot_first > 0).sum()) == 4
    assert int((hot_last > 0).sum()) == 3


def test_stage_by_stage_ends_at_sampling_probs_and_shows_each_cut():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]])
    settings = {"temperature": 0.8, "top_k": 4, "top_p": 0.9, "min_p": 0.3}
    stages = stage_by_stage(logits, **settings, order=("top_k", "temperature", "min_p", "top_p"))
    assert [name for name, _ in stages] == ["top_k", "temperature", "min_p", "top_p"]
    kept = [int((probs > 0).sum()) for _, probs in stages]
    assert kept == sorted(kept, reverse=True) and kept[0] == 4 and kept[-1] < 4
    last = sampling_probs(logits, **settings, order=("top_k", "temperature", "min_p", "top_p"))
    torch.testing.assert_close(stages[-1][1], last)


def test_greedy_ignores_the_order_and_the_filters():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    # Typical sampling alone would drop the top token; greedy never runs the chain.
    probs = sampling_probs(logits, temperature=0, typical_p=0.2, order=("typical_p",))
    assert probs.tolist() == [0.0, 1.0, 0.0, 0.0]
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert int(sample_next(logits, temperature=0, min_p=0.5, order=(), generator=generator)) == 1
    assert torch.equal(generator.get_state(), state)


def test_stages_that_are_off_change_nothing():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 50, generator=generator)
    course = sampling_probs(logits, temperature=0.7, top_k=10, top_p=0.9)
    reordered = sampling_probs(logits, temperature=0.7, top_k=10, top_p=0.9, min_p=None)
    assert torch.equal(course, reordered)
    # An order without a stage is fine while that stage is off.
    only_temperature = sampling_probs(logits, temperature=0.7, order=("temperature",))
    torch.testing.assert_close(only_temperature, torch.softmax(logits / 0.7, dim=-1))


@pytest.mark.parametrize(
    ("order", "settings", "error", "fragment"),
    [
        ("temperature", {}, TypeError, "order must be a list or tuple"),
        (("temperature", "top-k"), {}, ValueError, "'top-k'"),
        (("top_k", "top_k"), {}, ValueError, "at most once"),
        (LIBRARY_ORDERS["vLLM"], {"typical_p": 0.9}, ValueError, "typical_p=0.9 is switched on"),
        (("top_k",), {"temperature": 0.7}, ValueError, "no 'temperature' stage"),
    ],
)
def test_bad_orders_name_the_problem(order, settings, error, fragment):
    logits = torch.zeros(5)
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        sampling_probs(logits, **settings, order=order)
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        check_sampler(**settings, order=order)


def test_check_sampler_checks_each_setting_by_name():
    with pytest.raises(ValueError, match="min_p must be in"):
        check_sampler(min_p=1.5)
    with pytest.raises(TypeError, match="eta_cutoff must be a number"):
        check_sampler(eta_cutoff="0.1")
    checked = check_sampler(temperature=1, top_k=5, order=["top_k", "temperature"])
    assert checked["order"] == ("top_k", "temperature") and checked["top_k"] == 5
