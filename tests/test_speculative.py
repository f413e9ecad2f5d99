"""Speculative decoding: the one-step rule is exact, sampled text is distributed as the target's,
greedy text is generate's, the KV caches roll back, and bad input is refused."""

from __future__ import annotations

import copy
import itertools
import math
import random

import pytest
import torch

from lessonlib import speculative, tinytales
from lessonlib.analysis.statistics import chi_square_p_value
from lessonlib.checkpoint import DRAFT_CHECKPOINT_NAME, load_model
from lessonlib.generation import Generation, generate
from lessonlib.sampling import sampling_probs
from lessonlib.speculative import (
    SpeculativeGeneration,
    accept_or_resample,
    acceptance_probs,
    residual_probs,
    speculative_generate,
    speculative_step_distribution,
)
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import StubModel, lively_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A five-token alphabet keeps the joint distribution of the first three tokens at 125 cells, few
# enough for a chi-square test with a few thousand runs.
TOKENIZER = CharTokenizer("\nabcd", boundary="\n")
# Every distribution test fails with probability ALPHA when the sampler is exact (its false-alarm
# rate); the seeds are fixed, so each run of the suite gives the same verdict.
ALPHA = 1e-3
# Largest top-two logit gap treated as a tie that a pass over several positions may break the
# other way: five times the largest logit difference seen between the two paths (2e-5, on
# 24,000 greedy steps of the shipped model).
NEAR_TIE = 1e-4


def tiny_models() -> tuple:
    """A target and a much different draft over TOKENIZER: random GPTs with peaked logits."""
    target = lively_gpt(TOKENIZER.vocab_size, seed=0, block_size=32)
    draft = lively_gpt(TOKENIZER.vocab_size, seed=1, block_size=32)
    return target, draft


def random_pair(seed: int, size: int = 7, *, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Random distributions p and q (V,), each with some zeros where the other has mass."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(2, size, generator=generator, dtype=dtype)
    logits[0, seed % size] = -math.inf  # p = 0 somewhere
    logits[1, (seed + 1) % size] = -math.inf  # q = 0 where p > 0
    p, q = torch.softmax(logits, dim=-1)
    return p, q


# ---------------------------------------------------------------------------------------------
# One position
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_one_step_outputs_the_target_distribution_in_closed_form(seed):
    p, q = random_pair(seed)
    torch.testing.assert_close(speculative_step_distribution(p, q), p, atol=1e-12, rtol=0)
    assert bool(((q == 0) & (p > 0)).any())  # the case where only the residual can give x


def test_one_step_is_exact_for_identical_and_for_one_hot_distributions():
    p, _ = random_pair(3)
    one_hot = torch.zeros_like(p).index_fill(0, torch.tensor([2]), 1.0)
    for pair in [(p, p), (p, one_hot), (one_hot, p), (one_hot, one_hot)]:
        torch.testing.assert_close(
            speculative_step_distribution(*pair), pair[0], atol=1e-12, rtol=0
        )
    # Identical distributions keep every proposal, so the residual never matters.
    assert bool((acceptance_probs(p, p)[p > 0] == 1).all())
    torch.testing.assert_close(residual_probs(p, p), p)  # empty residual: P itself


def test_the_pieces_are_the_textbook_formulas():
    p, q = random_pair(5)
    accept = acceptance_probs(p, q)
    seen = q > 0
    torch.testing.assert_close(accept[seen], torch.clamp(p[seen] / q[seen], max=1.0))
    excess = torch.clamp(p - q, min=0)
    torch.testing.assert_close(residual_probs(p, q), excess / excess.sum())
    # What a kept proposal contributes is min(P, Q): the overlap of the two distributions.
    torch.testing.assert_close(q * accept, torch.minimum(p, q))


def test_the_closed_form_catches_resampling_from_p_instead_of_the_residual(monkeypatch):
    p, q = random_pair(4)
    monkeypatch.setattr(speculative, "_residual", lambda p, q: p.clone())
    wrong = speculative_step_distribution(p, q)
    assert float((wrong - p).abs().sum()) > 0.05


def one_step_counts(rule, p, q, draws: int, seed: int) -> torch.Tensor:
    """How often `rule(p, q, x, generator=)` outputs each token, for `draws` proposals x ~ q."""
    generator = torch.Generator().manual_seed(seed)
    proposals = torch.multinomial(q, draws, replacement=True, generator=generator).tolist()
    counts = torch.zeros(len(p))
    for x in proposals:
        token, _ = rule(p, q, x, generator=generator)
        counts[token] += 1
    return counts


def resample_from_p(p, q, x, *, generator):
    """The classic slip: after a rejection, draw from P instead of the residual."""
    keep = min(1.0, float(p[x] / q[x]))
    if float(torch.rand((), generator=generator)) < keep:
        return x, True
    return int(torch.multinomial(p, 1, generator=generator)), False


def test_accept_or_resample_draws_from_the_target_and_the_slip_is_caught():
    p, q = random_pair(8, dtype=torch.float32)
    counts = one_step_counts(accept_or_resample, p, q, draws=4000, seed=0)
    assert chi_square_p_value(counts, p) > ALPHA
    slipped = one_step_counts(resample_from_p, p, q, draws=4000, seed=0)
    assert chi_square_p_value(slipped, p) < ALPHA


def test_accept_or_resample_keeps_a_sure_proposal_and_resamples_an_impossible_one():
    p = torch.tensor([0.0, 0.5, 0.5])
    q = torch.tensor([0.5, 0.5, 0.0])
    generator = torch.Generator().manual_seed(0)
    assert accept_or_resample(p, q, 1, generator=generator) == (1, True)  # P >= Q: always kept
    # P(0) = 0: always rejected, and the residual (0, 0, 0.5) normalised only holds token 2.
    assert accept_or_resample(p, q, 0, generator=generator) == (2, False)


@pytest.mark.parametrize(
    ("p", "q", "x", "error", "match"),
    [
        ([0.5, 0.5], [0.5, 0.5], 2, ValueError, "drafted_token must be an int in 0..1, got 2"),
        ([0.5, 0.5], [1.0, 0.0], 1, ValueError, "probability 0 under q"),
        ([0.5, 0.6], [0.5, 0.5], 0, ValueError, "p must sum to 1"),
        ([1.5, -0.5], [0.5, 0.5], 0, ValueError, "p must hold finite probabilities >= 0"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], 0, ValueError, "same shape"),
        ([0.5, 0.5], [0.5, 0.5], 0.0, TypeError, "drafted_token must be an int"),
    ],
)
def test_accept_or_resample_refuses_bad_input(p, q, x, error, match):
    with pytest.raises(error, match=match):
        accept_or_resample(torch.tensor(p), torch.tensor(q), x)


# ---------------------------------------------------------------------------------------------
# Whole generations: distribution, greedy, caches
# ---------------------------------------------------------------------------------------------


def exact_first_tokens(
    model, prompt: str, length: int, tokenizer: CharTokenizer = TOKENIZER, **settings
) -> torch.Tensor:
    """The model's exact probability of each sequence of its first `length` tokens, (V,)*length."""
    start = [tokenizer.boundary_id, *tokenizer.encode(prompt)]
    vocab = tokenizer.vocab_size
    joint = torch.ones(())
    for step in range(length):
        prefixes = list(itertools.product(range(vocab), repeat=step))
        contexts = torch.tensor([start + list(prefix) for prefix in prefixes])
        with torch.inference_mode():
            probs = sampling_probs(model(contexts)[:, -1].double(), **settings)
        joint = joint.reshape(-1, 1) * probs  # (V**step, V): every prefix, then the next token
    return joint.reshape((vocab,) * length)


def first_token_counts(token_ids: list[list[int]], length: int, vocab: int = 5) -> torch.Tensor:
    """Counts of each sequence of the first `length` token ids."""
    counts = torch.zeros((vocab,) * length)
    for ids in token_ids:
        counts[tuple(ids[:length])] += 1
    return counts


def speculative_samples(target, draft, runs: int, **settings) -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [
        speculative_generate(
            target,
            draft,
            "ab",
            tokenizer=TOKENIZER,
            k=2,
            max_new_tokens=3,
            generator=generator,
            stop_at_boundary=False,
            **settings,
        ).token_ids[0]
        for _ in range(runs)
    ]


SETTINGS = [{}, {"temperature": 0.8, "top_k": 3}]  # the second: Q = 0 where P > 0, and back


@pytest.mark.parametrize("settings", SETTINGS)
def test_first_tokens_are_distributed_as_plain_sampling(settings):
    """Chi-square of the first three tokens (125 cells) against the target's exact joint
    distribution, for speculative and for plain sampling: both pass at false-alarm rate ALPHA."""
    target, draft = tiny_models()
    exact = exact_first_tokens(target, "ab", 3, **settings)
    spec = speculative_samples(target, draft, 2000, **settings)
    plain = generate(
        target,
        ["ab"] * 2000,
        tokenizer=TOKENIZER,
        max_new_tokens=3,
        generator=torch.Generator().manual_seed(0),
        stop_at_boundary=False,
        **settings,
    ).token_ids
    assert chi_square_p_value(first_token_counts(spec, 3), exact) > ALPHA
    assert chi_square_p_value(first_token_counts(plain, 3), exact) > ALPHA


def test_the_distribution_test_catches_resampling_from_p(monkeypatch):
    target, draft = tiny_models()
    exact = exact_first_tokens(target, "ab", 3)
    monkeypatch.setattr(speculative, "_residual", lambda p, q: p.clone())
    slipped = speculative_samples(target, draft, 2000)
    assert chi_square_p_value(first_token_counts(slipped, 3), exact) < ALPHA


@pytest.fixture(scope="module")
def shipped_pair():
    target, tokenizer = load_model()
    draft, _ = load_model(name=DRAFT_CHECKPOINT_NAME)
    return target, draft, tokenizer


def test_the_shipped_pair_samples_the_targets_first_two_characters(shipped_pair):
    """The course's models under top-p (the draft's Q is 0 on tokens the target keeps, and back):
    1,500 runs of two characters against the target's exact distribution, at rate ALPHA."""
    target, draft, tokenizer = shipped_pair
    prompt, settings = "Once upon a time, there was a ", {"top_p": 0.95}
    exact = exact_first_tokens(target, prompt, 2, tokenizer, **settings)
    generator = torch.Generator().manual_seed(0)
    runs = [
        speculative_generate(
            target,
            draft,
            prompt,
            tokenizer=tokenizer,
            k=2,
            max_new_tokens=2,
            generator=generator,
            **settings,
        ).token_ids[0]
        for _ in range(1500)
    ]
    assert (exact > 0).sum() > 5  # a choice of words, not one forced continuation
    assert chi_square_p_value(first_token_counts(runs, 2, tokenizer.vocab_size), exact) > ALPHA


def story_prompts(count: int, seed: int) -> list[str]:
    """Beginnings of TinyTales stories, cut at random lengths (the empty prompt included)."""
    rng = random.Random(seed)
    stories = tinytales.generate_stories(count, seed=seed)
    return [""] + [story[: rng.randrange(1, 80)] for story in stories[1:]]


def first_divergence_is_a_near_tie(plain: Generation, spec: Generation) -> bool:
    """True if the two texts agree, or first differ at a step where the top two logits tie
    to within NEAR_TIE in both runs' recorded logits."""
    a, b = plain.token_ids[0], spec.token_ids[0]
    if a == b:
        return True
    step = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if step >= min(len(a), len(b)):
        return False  # one is a prefix of the other: a stop, not a tie, made the difference
    gaps = [run.logits[0, step].topk(2).values for run in (plain, spec)]
    return all(float(top[0] - top[1]) < NEAR_TIE for top in gaps)


def test_greedy_speculative_text_is_generates_greedy_text(shipped_pair):
    """30 prompts, k = 1..6: the same token ids as generate. Near-ties are handled, not hidden:
    a divergence passes only at a near-tie, and near-ties are shown to be rare (under 1 step
    in 100; none in 24,000 steps when measured)."""
    target, draft, tokenizer = shipped_pair
    steps = near_ties = divergent = 0
    for i, prompt in enumerate(story_prompts(30, seed=7)):
        settings = {"tokenizer": tokenizer, "max_new_tokens": 100, "temperature": 0.0}
        plain = generate(target, prompt, record_logits=True, **settings)
        spec = speculative_generate(
            target, draft, prompt, k=1 + i % 6, record_logits=True, **settings
        )
        assert first_divergence_is_a_near_tie(plain, spec), prompt
        divergent += plain.token_ids != spec.token_ids
        top = plain.logits[0].topk(2, dim=-1).values
        near_ties += int((top[:, 0] - top[:, 1] < NEAR_TIE).sum())
        steps += top.shape[0]
        torch.testing.assert_close(spec.logits, plain.logits, atol=1e-4, rtol=0)
    assert steps > 2000 and near_ties <= steps / 100 and divergent <= 1


def test_the_near_tie_check_refuses_a_divergence_with_a_clear_winner():
    logits = torch.zeros(1, 3, 5)
    logits[0, :, 1] = 2.0  # token 1 wins every step by 2 nats
    plain = Generation(["a"], ["bbb"], [[2, 2, 2]], [False], logits)
    spec = Generation(["a"], ["bbc"], [[2, 2, 3]], [False], logits)
    assert not first_divergence_is_a_near_tie(plain, spec)
    tied = logits.clone()
    tied[0, 2, 3] = 2.0 - 1e-6
    assert first_divergence_is_a_near_tie(
        Generation(["a"], [""], [[2, 2, 1]], [False], tied),
        Generation(["a"], [""], [[2, 2, 3]], [False], tied),
    )


def test_greedy_in_float64_equals_generate_exactly(shipped_pair):
    """In float64 the two paths round 1e-9 apart: no near-tie excuse is needed."""
    target, draft = (copy.deepcopy(model).double() for model in shipped_pair[:2])
    tokenizer = shipped_pair[2]
    for i, prompt in enumerate(story_prompts(4, seed=3)):
        settings = {"tokenizer": tokenizer, "max_new_tokens": 150, "temperature": 0.0}
        plain = generate(target, prompt, **settings)
        spec = speculative_generate(target, draft, prompt, k=2 + i, **settings)
        assert spec.token_ids == plain.token_ids and spec.text == plain.text


def run_both_ways(target, draft, seed: int, k: int, **settings) -> list[SpeculativeGeneration]:
    """The same sampled speculative run through the KV caches and without them."""
    return [
        speculative_generate(
            target,
            draft,
            "ab",
            tokenizer=TOKENIZER,
            k=k,
            max_new_tokens=28,
            generator=torch.Generator().manual_seed(seed),
            stop_at_boundary=False,
            use_cache=use_cache,
            record_logits=True,
            **settings,
        )
        for use_cache in (True, False)
    ]


def same_run(cached: SpeculativeGeneration, fresh: SpeculativeGeneration) -> bool:
    """Same tokens and rounds, and probabilities and logits equal up to float32 rounding."""
    if cached.token_ids != fresh.token_ids or len(cached.rounds) != len(fresh.rounds):
        return False
    for a, b in zip(cached.rounds, fresh.rounds, strict=True):
        if (a.drafted, a.accepted, a.token) != (b.drafted, b.accepted, b.token):
            return False
        probs = [a.target_probs, b.target_probs, a.draft_probs, b.draft_probs]
        if not all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(*probs[:2])):
            return False
        if not all(math.isclose(x, y, abs_tol=1e-4) for x, y in zip(*probs[2:])):
            return False
    return bool(torch.allclose(cached.logits, fresh.logits, atol=1e-4, rtol=0))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_rolled_back_caches_give_the_run_without_caches(k):
    """With the same seed, the cached run (caches rolled back after each rejection) draws the
    same proposals, keeps the same ones and computes the same probabilities as a run that
    re-reads the whole context every pass."""
    target, draft = tiny_models()
    for seed in range(4):
        cached, fresh = run_both_ways(target, draft, seed, k, temperature=0.9)
        assert any(r.accepted < len(r.drafted) for r in cached.rounds)  # rejections happened
        assert same_run(cached, fresh)


@pytest.mark.parametrize("broken", ["target", "draft"])
def test_a_cache_that_is_not_rolled_back_is_caught(monkeypatch, broken):
    target, draft = tiny_models()
    fresh = run_both_ways(target, draft, 0, 3)[1]
    keep = speculative._Reader.keep

    def keep_all_but_the_broken_model(self, length):
        if self.model is not (target if broken == "target" else draft):
            keep(self, length)

    monkeypatch.setattr(speculative._Reader, "keep", keep_all_but_the_broken_model)
    try:
        cached = run_both_ways(target, draft, 0, 3)[0]
    except (ValueError, IndexError):  # stale entries can leave too few new positions to read
        return
    assert not same_run(cached, fresh)


def test_the_rounds_add_up_to_the_text():
    target, draft = tiny_models()
    result = speculative_generate(
        target,
        draft,
        "a",
        tokenizer=TOKENIZER,
        k=4,
        max_new_tokens=30,
        generator=torch.Generator().manual_seed(2),
        stop_at_boundary=False,
    )
    produced = [t for r in result.rounds for t in r.produced]
    assert produced == result.token_ids[0] and TOKENIZER.decode(produced) == result.text
    assert result.target_passes == len(result.rounds)
    assert result.draft_passes == sum(len(r.drafted) for r in result.rounds)
    for r in result.rounds:
        assert len(r.drafted) <= 4 and 0 <= r.accepted <= len(r.drafted)
        assert r.bonus == (r.accepted == len(r.drafted) and r.token is not None)
        assert len(r.target_probs) == len(r.draft_probs) == len(r.drafted)
    kept = sum(r.accepted for r in result.rounds)
    rejections = sum(r.accepted < len(r.drafted) for r in result.rounds)
    assert rejections > 0 and any(r.accepted + 1 < len(r.drafted) for r in result.rounds)
    assert sum(r.rejected for r in result.rounds) == rejections
    # Proposals after a rejection were never judged: they count neither way.
    assert result.acceptance_rate == kept / (kept + rejections)
    assert result.tokens_per_target_pass == len(produced) / len(result.rounds)


def test_stopping_and_the_token_budget():
    target, draft = tiny_models()
    common = {"tokenizer": TOKENIZER, "k": 3, "generator": torch.Generator().manual_seed(4)}
    exact = speculative_generate(
        target, draft, "a", max_new_tokens=17, stop_at_boundary=False, **common
    )
    assert len(exact.token_ids[0]) == 17 and exact.finished == [False]
    nothing = speculative_generate(
        target, draft, "a", max_new_tokens=0, record_logits=True, **common
    )
    assert nothing.texts == [""] and nothing.rounds == [] and nothing.logits.shape == (1, 0, 5)
    # A model that always ends the text: the first kept proposal or the first token stops it.
    ender = StubModel()
    ender.vocab_size, ender.table = (
        5,
        torch.full((5, 5), -9.0).index_fill(1, torch.tensor([0]), 9.0),
    )
    stopped = speculative_generate(ender, ender, "ab", max_new_tokens=20, **common)
    assert stopped.finished == [True] and stopped.text == "" and stopped.token_ids == [[0]]


def test_the_target_as_its_own_draft_keeps_every_proposal():
    target, _ = tiny_models()
    target = copy.deepcopy(target).double()  # float64: P and Q agree to rounding
    result = speculative_generate(
        target,
        target,
        "ab",
        tokenizer=TOKENIZER,
        k=3,
        max_new_tokens=24,
        generator=torch.Generator().manual_seed(0),
        stop_at_boundary=False,
    )
    assert result.acceptance_rate == 1.0 and result.tokens_per_target_pass == 4.0


def test_a_draft_without_a_cache_and_a_short_window_works():
    """StubModel keeps no cache and reads one token: any draft is allowed, exactness needs none."""
    stub = StubModel()
    stub.vocab_size, stub.table, stub.block_size = 5, stub.table[:5, :5], 1
    target, _ = tiny_models()
    result = speculative_generate(
        target,
        stub,
        "ab",
        tokenizer=TOKENIZER,
        k=3,
        max_new_tokens=25,
        generator=torch.Generator().manual_seed(1),
        stop_at_boundary=False,
    )
    assert len(result.token_ids[0]) == 25 and result.draft_passes > 0


def test_bad_arguments_raise_clear_errors(shipped_pair):
    target, draft = tiny_models()
    call = {"tokenizer": TOKENIZER, "k": 2, "max_new_tokens": 5}
    cases = [
        ({"target": "model"}, TypeError, "target must be a course language model"),
        ({"draft": 3}, TypeError, "draft must be a course language model"),
        (
            {"draft": shipped_pair[1]},
            ValueError,
            "share one vocabulary, got vocab_size 5, 50 and 5",
        ),
        ({"prompt": ["ab"]}, TypeError, "prompt must be a str"),
        ({"prompt": "az"}, ValueError, "'z' at position 1"),
        ({"k": 0}, ValueError, "k must be an int >= 1, got 0"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"max_new_tokens": -1}, ValueError, "max_new_tokens must be an int >= 0"),
        ({"max_new_tokens": 31}, ValueError, "max_new_tokens must be <= 30 for this prompt"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"top_p": 1.5}, ValueError, "top_p"),
        ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
        ({"use_cache": 1}, TypeError, "use_cache must be True or False"),
        ({"tokenizer": "abc"}, TypeError, "tokenizer must be a course tokenizer"),
    ]
    for change, error, match in cases:
        arguments = {"target": target, "draft": draft, "prompt": "ab", **call, **change}
        with pytest.raises(error, match=match):
            speculative_generate(**arguments)
