"""Beam search against a plain reference search, on many small random bigrams and GPTs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

from lessonlib.beam_search import BeamSearchResult, Hypothesis, beam_search, beam_search_many
from lessonlib.bigram import BigramModel
from lessonlib.generation import LanguageModel, next_token_logits
from lessonlib.threads import torch_threads
from lessonlib.tokenizer import CharTokenizer
from tests.stub_models import lively_gpt

SYMBOLS = "·abcde"  # the boundary '·' and up to five letters; models use the first 4..6
Ids = tuple[int, ...]


# ---------------------------------------------------------------- the reference search


@dataclass
class Extension:
    """One live hypothesis extended by one token."""

    log_prob: float  # summed log-probability of ids
    parent: int  # rank of the parent in the beam it came from
    ids: Ids  # generated ids, the new token included


@dataclass
class Reference:
    """What the reference search found (hypotheses as (ids, log_prob))."""

    finished: list[tuple[Ids, float]]  # in the order found
    live: list[tuple[Ids, float]]  # the beam when the search stopped, best first
    steps: list[tuple[list[tuple[Ids, float]], list[tuple[Ids, float]]]]  # (kept, ended)
    stop_reason: str
    # (gap, same_order) for every pair of scores the search compared; same_order: an exact
    # tie would be broken the same way by lessonlib (see `has_parent_tie`).
    gaps: list[tuple[float, bool]] = field(default_factory=list)


def next_log_probs(model: LanguageModel, context: list[int]) -> list[float]:
    """log P(next token | context) in float64, computed from the model's logits as lessonlib does."""
    # One thread, as lessonlib decodes small batches: fast on a busy machine, and the thread
    # count moves float32 logits by about 1e-6.
    with torch.no_grad(), torch_threads(1):
        logits = next_token_logits(model, torch.tensor([context]))[0]
    return torch.log_softmax(logits.double(), dim=-1).tolist()


def ranked_extensions(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    prompt: str,
    beam: list[tuple[Ids, float]],
    *,
    step: int,
    min_new_tokens: int | None,
) -> list[Extension]:
    """Every possible extension of `beam` (best first), at generation step `step`."""
    end = tokenizer.boundary_id
    start = [end, *tokenizer.encode(prompt)]  # the context starts with the boundary token
    extensions = []
    for parent, (ids, log_prob) in enumerate(beam):
        for token, token_log_prob in enumerate(next_log_probs(model, start + list(ids))):
            if token == end and min_new_tokens is not None and step <= min_new_tokens:
                token_log_prob = -math.inf  # forbidden, and the others are not renormalised
            if log_prob + token_log_prob > -math.inf:
                extensions.append(Extension(log_prob + token_log_prob, parent, (*ids, token)))
    # A stable sort of a list built in (parent, token) order breaks ties by (parent, token).
    return sorted(extensions, key=lambda e: -e.log_prob)


def normalised(ids: Ids, log_prob: float, length_penalty: float) -> float:
    """The ranking score of a hypothesis: log_prob / length ** length_penalty."""
    return log_prob / len(ids) ** length_penalty


def reference_beam_search(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    prompt: str,
    *,
    width: int,
    max_new_tokens: int,
    length_penalty: float = 0.0,
    min_new_tokens: int | None = None,
) -> Reference:
    """Beam search by the rules of `beam_search_many`'s docstring, one hypothesis at a time."""
    end = tokenizer.boundary_id
    beam: list[tuple[Ids, float]] = [((), 0.0)]
    ref = Reference(finished=[], live=beam, steps=[], stop_reason="max_new_tokens")
    for step in range(1, max_new_tokens + 1):
        ranked = ranked_extensions(
            model, tokenizer, prompt, beam, step=step, min_new_tokens=min_new_tokens
        )
        kept, ended = [], []
        examined = len(ranked)
        for rank, extension in enumerate(ranked):
            if len(kept) == width:
                examined = rank + 1  # this one lost to the last kept: their order mattered
                break
            if extension.ids[-1] != end:
                kept.append((extension.ids, extension.log_prob))
            elif rank < width:  # an ending extension among the best `width` finishes
                ended.append((extension.ids, extension.log_prob))
            # An ending extension ranked lower is dropped: it was not good enough to keep.
        ref.gaps += [
            (a.log_prob - b.log_prob, a.parent == b.parent)
            for a, b in itertools.pairwise(ranked[:examined])
        ]
        ref.finished += ended
        ref.steps.append((kept, ended))
        beam = ref.live = kept
        if not beam:
            ref.stop_reason = "exhausted"
            break
        if len(ref.finished) >= width:
            # A live log-probability only falls, so it can reach at most s / max_new ** alpha.
            finished_scores = sorted(
                (normalised(ids, lp, length_penalty) for ids, lp in ref.finished), reverse=True
            )
            reachable = beam[0][1] / max_new_tokens**length_penalty
            ref.gaps.append((abs(finished_scores[width - 1] - reachable), True))
            if finished_scores[width - 1] >= reachable:
                ref.stop_reason = "unbeatable"
                break
    finished_scores = sorted(
        (normalised(ids, lp, length_penalty) for ids, lp in ref.finished), reverse=True
    )
    ref.gaps += [(a - b, True) for a, b in itertools.pairwise(finished_scores)]
    return ref


def reference_best(ref: Reference, length_penalty: float) -> tuple[Ids, float]:
    """The best finished hypothesis by normalised score, else the best live one."""
    candidates = ref.finished or ref.live
    return max(candidates, key=lambda h: normalised(h[0], h[1], length_penalty))


# ---------------------------------------------------------------- models and comparisons


def random_bigram(seed: int, vocab_size: int) -> tuple[BigramModel, CharTokenizer]:
    """A bigram from random counts, about a third of them zero (impossible pairs)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (vocab_size, vocab_size)
    counts = torch.randint(1, 100, shape, generator=generator)
    counts *= torch.rand(shape, generator=generator) > 0.35
    counts[counts.sum(dim=1) == 0, 0] = 1  # every row needs a count to normalise
    symbols = SYMBOLS[:vocab_size]
    model = BigramModel(counts, smoothing=0.0, symbols=symbols)
    return model, CharTokenizer(symbols, boundary="·")


def random_gpt(seed: int, vocab_size: int, block_size: int) -> tuple[LanguageModel, CharTokenizer]:
    """A small random GPT with spread-out logits, and its tokenizer."""
    symbols = SYMBOLS[:vocab_size]
    model = lively_gpt(vocab_size, seed=seed, block_size=block_size)
    return model, CharTokenizer(symbols, boundary="·")


def has_parent_tie(ref: Reference) -> bool:
    """Whether children of different parents tied exactly, in an order that mattered.

    lessonlib breaks such a tie by physical cache row, the reference by rank, so the two may
    differ there. In a bigram, paths that take the same transitions in another order tie.
    """
    return any(gap == 0 and not same_order for gap, same_order in ref.gaps)


def tie_free_bigram(
    seed: int, vocab_size: int, search: Callable[[BigramModel, CharTokenizer], list[Reference]]
) -> tuple[BigramModel, CharTokenizer, list[Reference]]:
    """The first random bigram (seeds seed, seed + 1000, ...) where `search` meets no parent tie."""
    for model_seed in range(seed, seed + 20_000, 1000):
        model, tokenizer = random_bigram(model_seed, vocab_size)
        refs = search(model, tokenizer)
        if not any(has_parent_tie(ref) for ref in refs):
            return model, tokenizer, refs
    raise AssertionError(f"every bigram from seed {seed} has a parent tie")


def assert_no_close_calls(ref: Reference, *, tolerance: float) -> None:
    """Fail on a GPT case where two compared scores are closer than cached float32 logits agree."""
    if ref.gaps:
        closest = min(gap for gap, _ in ref.gaps)
        assert closest > tolerance, f"two scores {closest:.1e} apart: pick another seed"


def as_pairs(hypotheses: tuple[Hypothesis, ...]) -> list[tuple[Ids, float]]:
    """lessonlib's hypotheses as the reference's (ids, log_prob) pairs."""
    return [(h.token_ids, h.log_prob) for h in hypotheses]


def assert_same_pairs(found: list[tuple[Ids, float]], expected, *, tolerance: float) -> None:
    """Same token ids in the same order, same log-probabilities up to `tolerance`."""
    assert [ids for ids, _ in found] == [ids for ids, _ in expected]
    assert [lp for _, lp in found] == pytest.approx([lp for _, lp in expected], abs=tolerance)


def assert_matches_reference(
    result: BeamSearchResult,
    ref: Reference,
    tokenizer: CharTokenizer,
    *,
    length_penalty: float,
    tolerance: float,
) -> None:
    """The best hypothesis, the finished list, the live beam, each step and the stop reason."""
    best_ids, best_lp = reference_best(ref, length_penalty)
    end = tokenizer.boundary_id
    assert result.best.text == "".join(tokenizer.chars[i] for i in best_ids if i != end)
    assert result.best.score == pytest.approx(
        normalised(best_ids, best_lp, length_penalty), abs=tolerance
    )
    assert result.stop_reason == ref.stop_reason
    # Finished best first; sorted() is stable, so equal scores stay in the order found.
    finished = sorted(ref.finished, key=lambda h: -normalised(h[0], h[1], length_penalty))
    assert_same_pairs(as_pairs(result.finished), finished, tolerance=tolerance)
    assert [h.score for h in result.finished] == pytest.approx(
        [normalised(ids, lp, length_penalty) for ids, lp in finished], abs=tolerance
    )
    assert all(h.finished and h.token_ids[-1] == end for h in result.finished)
    assert_same_pairs(as_pairs(result.unfinished), ref.live, tolerance=tolerance)
    assert len(result.steps) == len(ref.steps)
    for step, (kept, ended) in zip(result.steps, ref.steps, strict=True):
        assert_same_pairs(as_pairs(step.kept), kept, tolerance=tolerance)
        assert_same_pairs(as_pairs(step.ended), ended, tolerance=tolerance)


# Every combination once: (width, length_penalty, min_new_tokens, use_cache).
GRID = list(itertools.product([1, 2, 3, 4, 5], [0.0, 0.5, 1.0], [None, 2], [True, False]))
CASES = [pytest.param(seed, *setting, id=f"case{seed}") for seed, setting in enumerate(GRID)]
PROMPTS = ["", "a", "ba", "c"]
# Scores of a GPT, batched here and one row at a time in the reference: float32 logits may differ
# by a few units in the last place (about 1e-6 on scores near -5), so compare to 1e-5.
GPT_TOLERANCE = 1e-5


@pytest.mark.parametrize("seed, width, length_penalty, min_new_tokens, use_cache", CASES)
def test_beam_search_matches_the_reference_on_random_bigrams(
    seed, width, length_penalty, min_new_tokens, use_cache
):
    """Random bigram: same best, finished, live beam, steps and stop reason as the reference."""
    prompt = PROMPTS[seed % len(PROMPTS)]
    settings = {
        "max_new_tokens": 4 + seed % 5,
        "length_penalty": length_penalty,
        "min_new_tokens": min_new_tokens,
    }
    model, tokenizer, [ref] = tie_free_bigram(
        seed,
        4 + seed % 3,
        lambda m, t: [reference_beam_search(m, t, prompt, width=width, **settings)],
    )
    result = beam_search(
        model, prompt, tokenizer=tokenizer, beam_width=width, use_cache=use_cache, **settings
    )
    # Same float64 arithmetic on the same float32 log-probabilities: bit-identical scores.
    assert_matches_reference(result, ref, tokenizer, length_penalty=length_penalty, tolerance=0.0)


@pytest.mark.parametrize("seed, width, length_penalty, min_new_tokens, use_cache", CASES)
def test_beam_search_matches_the_reference_on_random_gpts(
    seed, width, length_penalty, min_new_tokens, use_cache
):
    """Random GPT (some past their block size): same results as the uncached reference."""
    # block_size 6 < 1 + prompt + max_new_tokens for some cases: the cache must be refilled.
    model, tokenizer = random_gpt(seed, vocab_size=4 + seed % 3, block_size=[6, 32][seed % 2])
    prompt = PROMPTS[seed % len(PROMPTS)]
    settings = {
        "max_new_tokens": 4 + seed % 5,
        "length_penalty": length_penalty,
        "min_new_tokens": min_new_tokens,
    }
    result = beam_search(
        model, prompt, tokenizer=tokenizer, beam_width=width, use_cache=use_cache, **settings
    )
    ref = reference_beam_search(model, tokenizer, prompt, width=width, **settings)
    assert_no_close_calls(ref, tolerance=1e-5)
    assert_matches_reference(
        result, ref, tokenizer, length_penalty=length_penalty, tolerance=GPT_TOLERANCE
    )


MANY_PROMPTS = ["ab", "ba", "cc", "da"]  # beam_search_many needs prompts of equal length


def many_prompts_case(kind: str, seed: int):
    """Model, tokenizer, settings, the reference for each prompt, and the score tolerance."""
    settings = {"width": 1 + seed % 4, "max_new_tokens": 6, "length_penalty": [0, 0.5, 1][seed % 3]}

    def search(model, tokenizer):
        return [reference_beam_search(model, tokenizer, p, **settings) for p in MANY_PROMPTS]

    if kind == "bigram":
        model, tokenizer, refs = tie_free_bigram(100 + seed, 5, search)
        return model, tokenizer, settings, refs, 0.0
    model, tokenizer = random_gpt(100 + seed, vocab_size=5, block_size=32)
    refs = search(model, tokenizer)
    for ref in refs:
        assert_no_close_calls(ref, tolerance=1e-5)
    return model, tokenizer, settings, refs, GPT_TOLERANCE


@pytest.mark.parametrize("kind", ["bigram", "gpt"])
@pytest.mark.parametrize("seed", range(6))
def test_several_prompts_at_once_match_the_reference(kind, seed):
    """beam_search_many: each prompt's search matches the reference run on that prompt alone."""
    model, tokenizer, settings, refs, tolerance = many_prompts_case(kind, seed)
    results = beam_search_many(
        model,
        MANY_PROMPTS,
        tokenizer=tokenizer,
        beam_width=settings["width"],
        max_new_tokens=settings["max_new_tokens"],
        length_penalty=settings["length_penalty"],
        use_cache=seed % 2 == 0,
    )
    for prompt, result, ref in zip(MANY_PROMPTS, results, refs, strict=True):
        assert result.prompt == prompt
        assert_matches_reference(
            result, ref, tokenizer, length_penalty=settings["length_penalty"], tolerance=tolerance
        )


def test_the_several_prompt_cases_cover_every_stop_reason():
    """The cases above stop for each reason, and some prompts idle while others still run."""
    reasons, mixed = set(), False
    for kind, seed in itertools.product(["bigram", "gpt"], range(6)):
        refs = many_prompts_case(kind, seed)[3]
        reasons |= {ref.stop_reason for ref in refs}
        mixed |= len({len(ref.steps) for ref in refs}) > 1
    assert reasons == {"unbeatable", "max_new_tokens", "exhausted"}
    assert mixed


def test_a_width_two_beam_finds_ac_on_the_reviewers_toy():
    """Regression: the stop rule must bound by the best live hypothesis, not the worst."""
    counts = torch.tensor([[30, 45, 25, 0], [20, 0, 0, 80], [90, 0, 10, 0], [100, 0, 0, 0]])
    model = BigramModel(counts, smoothing=0.0, symbols="·abc")
    tokenizer = CharTokenizer("·abc", boundary="·")
    result = beam_search(model, "", tokenizer=tokenizer, beam_width=2, max_new_tokens=5)
    # After two steps '' (0.3) and 'b' (0.225) have finished, but live 'ac' (0.36) can still
    # beat them; bounding by live 'bb' (0.025) would stop there and return ''.
    assert result.best.text == "ac"
    assert result.best.log_prob == pytest.approx(math.log(0.36))
    assert result.stop_reason == "unbeatable"
    ref = reference_beam_search(model, tokenizer, "", width=2, max_new_tokens=5)
    assert not has_parent_tie(ref)
    assert_matches_reference(result, ref, tokenizer, length_penalty=0.0, tolerance=0.0)


@pytest.mark.parametrize("kind", ["bigram", "gpt"])
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_ended_hypothesis_ranked_below_the_width(kind, width):
    """Each step's ended hypotheses are exactly the ending extensions among its best `width`."""
    settings = {"width": width, "max_new_tokens": 8, "length_penalty": 0.5}
    ended = dropped = 0
    for seed in range(200, 210):
        if kind == "bigram":
            # No parent ties in the reference: lessonlib's beam then has the same order.
            model, tokenizer, _ = tie_free_bigram(
                seed, 6, lambda m, t: [reference_beam_search(m, t, "a", **settings)]
            )
        else:
            model, tokenizer = random_gpt(seed, vocab_size=6, block_size=32)
            ref = reference_beam_search(model, tokenizer, "a", **settings)
            assert_no_close_calls(ref, tolerance=1e-5)
        end = tokenizer.boundary_id
        result = beam_search(
            model, "a", tokenizer=tokenizer, beam_width=width, max_new_tokens=8, length_penalty=0.5
        )
        parents: list[tuple[Ids, float]] = [((), 0.0)]
        for step in result.steps:
            # Rank every extension of lessonlib's own previous beam.
            ranked = ranked_extensions(
                model, tokenizer, "a", parents, step=step.step, min_new_tokens=None
            )
            ranks = {extension.ids: rank for rank, extension in enumerate(ranked)}
            assert all(ranks[h.token_ids] < width for h in step.ended)
            assert [h.token_ids for h in step.ended] == [
                extension.ids for extension in ranked[:width] if extension.ids[-1] == end
            ]
            # Ending extensions ranked at or below the width but above a kept hypothesis.
            last_kept = max(ranks[h.token_ids] for h in step.kept) if step.kept else -1
            dropped += sum(e.ids[-1] == end for e in ranked[width:last_kept])
            ended += len(step.ended)
            parents = as_pairs(step.kept)
    # The checks had something to check: endings kept, and (width > 1) endings dropped.
    assert ended > 0
    assert dropped > 0 or width == 1
