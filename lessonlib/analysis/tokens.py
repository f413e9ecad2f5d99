"""Lesson 11's measurements: how BPE splits TinyTales, the token model against the truth, and
parity of the course's sampler with transformers' `generate`.

Scores are per character so that a token model and a character model can be compared with each
other and with the grammar: a story's log-probability is the same quantity whatever the tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.statistics import Estimate, ratio_with_error
from lessonlib.generation import LanguageModel, generate
from lessonlib.hf import HFLanguageModel, HFTokenizer, hf_generate_kwargs
from lessonlib.progress import progress_bar
from lessonlib.sampling import sampling_probs
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import Tokenizer

__all__ = [
    "KeptParity",
    "StoryScores",
    "continuation_log_prob",
    "format_scores",
    "format_tails",
    "greedy_parity",
    "kept_parity",
    "mass_outside_top",
    "paired_gap",
    "score_stories",
    "sequence_log_prob",
    "tail_outside_top",
]


@torch.inference_mode()
def sequence_log_prob(model: LanguageModel, ids: Sequence[int], *, boundary_id: int) -> float:
    """Natural log of P(ids) under `model`, read after the boundary token (one forward pass)."""
    tokens = torch.tensor([[boundary_id, *ids]])
    if tokens.shape[1] - 1 > model.block_size:
        raise ValueError(
            f"ids must fit in the model's context: {len(ids)} tokens after the boundary is more "
            f"than block_size={model.block_size}"
        )
    with torch_threads(GENERATION_THREADS):
        log_probs = torch.log_softmax(model(tokens[:, :-1])[0].double(), dim=-1)
    return float(log_probs.gather(-1, tokens[0, 1:, None]).sum())


@dataclass(frozen=True)
class StoryScores:
    """Held-out stories scored by a model and by the grammar, in nats per character."""

    model: Estimate  # the model's cross-entropy, nats per character (END counted once per story)
    truth: Estimate  # the grammar's, on the same stories: the floor
    stories: int
    characters: int
    tokens: int  # tokens the model read (story tokens and one END each)
    story_nats: tuple[float, ...] = ()  # -log P(story) under the model, one per story
    story_sizes: tuple[int, ...] = ()  # characters of each story, its END counted

    @property
    def gap(self) -> float:
        """Nats per character the model loses to the truth."""
        return self.model.value - self.truth.value


def score_stories(
    model: LanguageModel, tokenizer: Tokenizer, stories: Sequence[str], *, progress: bool = False
) -> StoryScores:
    """Each story's log-probability under `model` (its own tokens, then END) and the grammar."""
    if not stories:
        raise ValueError("stories must be a non-empty sequence of TinyTales stories")
    model_nats, truth_nats, sizes, tokens = [], [], [], 0
    for story in progress_bar(stories, desc="stories scored", unit="story", show=progress):
        ids = [*tokenizer.encode(story), tokenizer.boundary_id]
        tokens += len(ids)
        model_nats.append(-sequence_log_prob(model, ids, boundary_id=tokenizer.boundary_id))
        truth_nats.append(-tinytales.story_log_prob(story))
        sizes.append(len(story) + 1)
    return StoryScores(
        model=ratio_with_error(model_nats, sizes),
        truth=ratio_with_error(truth_nats, sizes),
        stories=len(stories),
        characters=sum(sizes),
        tokens=tokens,
        story_nats=tuple(model_nats),
        story_sizes=tuple(sizes),
    )


def paired_gap(first: StoryScores, second: StoryScores) -> Estimate:
    """first's nats per character minus second's, on the same stories (paired standard error)."""
    if first.story_sizes != second.story_sizes or not first.story_sizes:
        raise ValueError("first and second must score the same stories (score_stories on both)")
    diffs = [a - b for a, b in zip(first.story_nats, second.story_nats, strict=True)]
    return ratio_with_error(diffs, list(first.story_sizes))


@dataclass(frozen=True)
class KeptParity:
    """The tokens one setting keeps, by the course's sampler and by transformers' generate."""

    setting: Mapping[str, object]
    hf_kwargs: Mapping[str, object]
    course_kept: int  # tokens with P > 0 after lessonlib's chain
    hf_kept: int  # tokens with a finite score after generate's processors
    same_tokens: bool  # the two kept sets are equal
    max_prob_gap: float  # largest |P_course - P_hf| over the vocabulary


@torch.inference_mode()
def kept_parity(
    model: HFLanguageModel,
    tokenizer: HFTokenizer,
    prompt: str,
    settings: Sequence[Mapping[str, object]],
) -> list[KeptParity]:
    """For each setting: one step of `model.hf.generate` beside `sampling_probs` on its logits."""
    ids = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(prompt)]])
    rows = []
    for setting in settings:
        kwargs = hf_generate_kwargs(**setting)
        with torch_threads(GENERATION_THREADS):
            out = model.hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=1,
                output_logits=True,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.boundary_id,
                **kwargs,
            )
        raw, processed = out.logits[0][0], out.scores[0][0]
        ours = sampling_probs(raw, **setting)
        theirs = torch.softmax(processed.double(), dim=-1)
        rows.append(
            KeptParity(
                setting=dict(setting),
                hf_kwargs=kwargs,
                course_kept=int((ours > 0).sum()),
                hf_kept=int(torch.isfinite(processed).sum()),
                same_tokens=bool(torch.equal(ours > 0, torch.isfinite(processed))),
                max_prob_gap=float((ours.double() - theirs).abs().max()),
            )
        )
    return rows


@torch.inference_mode()
def greedy_parity(
    model: HFLanguageModel, tokenizer: HFTokenizer, prompts: Sequence[str], *, max_new_tokens: int
) -> list[bool]:
    """Whether `generate(..., temperature=0)` writes `model.hf.generate(do_sample=False)`'s tokens."""
    same = []
    for prompt in prompts:
        ours = generate(
            model, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens, temperature=0
        ).token_ids[0]
        ids = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(prompt)]])
        with torch_threads(GENERATION_THREADS):
            out = model.hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.boundary_id,
                **hf_generate_kwargs(temperature=0),
            )
        same.append(out[0, ids.shape[1] :].tolist() == ours)
    return same


def mass_outside_top(logits: Tensor, n: int, *, temperature: float = 1.0) -> float:
    """Probability the tokens outside the n most likely hold after temperature."""
    probs = sampling_probs(logits.double(), temperature=temperature)
    return float(1 - probs.topk(min(n, probs.numel())).values.sum())


@torch.inference_mode()
def tail_outside_top(
    model: LanguageModel,
    tokenizer: Tokenizer,
    stories: Sequence[str],
    *,
    n: int,
    temperatures: Sequence[float],
) -> dict[float, Estimate]:
    """Mean probability outside the n likeliest next tokens, over every step of `stories`.

    Each story is read once (start token, its tokens, END); the mean is over its steps, and the
    standard error counts each story as one unit.
    """
    if not stories:
        raise ValueError("stories must be a non-empty sequence of TinyTales stories")
    per_story: dict[float, list[float]] = {float(t): [] for t in temperatures}
    sizes = []
    for index, story in enumerate(stories):
        ids = torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(story)]])
        if ids.shape[1] > model.block_size:
            raise ValueError(
                f"stories[{index}] must fit in the model's context: {ids.shape[1]} tokens with "
                f"the start token, more than block_size={model.block_size}"
            )
        with torch_threads(GENERATION_THREADS):
            logits = model(ids)[0].double()
        sizes.append(logits.shape[0])
        for tau, sums in per_story.items():
            probs = sampling_probs(logits, temperature=tau)
            outside = 1 - probs.topk(min(n, probs.shape[-1]), dim=-1).values.sum(-1)
            sums.append(float(outside.sum()))
    return {tau: ratio_with_error(sums, sizes) for tau, sums in per_story.items()}


def continuation_log_prob(
    model: LanguageModel, tokenizer: HFTokenizer, context: str, pieces: Sequence[str]
) -> float:
    """log P(pieces | start token + context): tokens given in the vocabulary's own spelling."""
    ids = tokenizer.hf.convert_tokens_to_ids(list(pieces))
    if any(i is None or i == tokenizer.hf.unk_token_id for i in ids):
        raise ValueError(f"pieces must be tokens of the vocabulary, got {list(pieces)!r}")
    before = tokenizer.encode(context)
    boundary = tokenizer.boundary_id
    return sequence_log_prob(model, [*before, *ids], boundary_id=boundary) - sequence_log_prob(
        model, before, boundary_id=boundary
    )


def format_tails(tails: Mapping[str, Mapping[float, Estimate]]) -> str:
    """One line per model: the mean mass outside the top tokens at each temperature (se)."""
    return "\n".join(
        f"{name:>13}: "
        + ", ".join(f"tau {tau}: {e.value:.1e} ({e.standard_error:.0e})" for tau, e in tail.items())
        for name, tail in tails.items()
    )


def format_scores(scores: Mapping[str, StoryScores]) -> str:
    """One line per model: nats per character (se), the truth's on the same stories, the gap."""
    return "\n".join(
        f"{name:>13}: {s.model.value:.4f} ({s.model.standard_error:.4f}) nats/char; "
        f"the truth {s.truth.value:.4f}; gap {s.gap:.4f}"
        for name, s in scores.items()
    )
