"""The long tail of recorded next-token distributions: where each drawn token ranked, and when a
draw from outside the top k is the one that broke a TinyTales story.

Functions of the raw logits that `generate(..., record_logits=True)` keeps, (steps, V) at
temperature 1, and of the drawn ids. Rank 1 is the most likely token and tied logits share the
best rank, so "rank <= k" is exactly what `filter_top_k` keeps. `paired_top_k` draws twin
batches with the same random numbers, without a filter and with top-k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.batches import batch_sizes, generate_batches, seeded
from lessonlib.analysis.distributions import tail_mass
from lessonlib.analysis.recorded import check_recorded, row_logits
from lessonlib.generation import Generation, LanguageModel
from lessonlib.progress import progress_bar
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int, check_logits, check_real

__all__ = [
    "BreakCounts",
    "PairedRuns",
    "StoryBreak",
    "TailSummary",
    "count_breaks",
    "find_tail_break",
    "first_impossible_index",
    "first_tail_draws",
    "format_breaks",
    "mark_token",
    "pair_divergence",
    "paired_top_k",
    "story_breaks",
    "summarize_tail",
    "tail_mass_by_step",
    "token_probs",
    "token_ranks",
    "valid_stories",
]


@dataclass(frozen=True)
class TailSummary:
    """How much probability lay outside the top k over the steps of one generation."""

    k: int  # tokens kept by top-k
    mean: float  # mean tail mass per step
    max: float  # largest tail mass of any step
    steps_above: int  # steps whose tail mass exceeds `threshold`
    steps: int  # steps in all
    threshold: float  # the tail mass that counts as "not negligible"


@dataclass(frozen=True)
class StoryBreak:
    """The drawn token at the very character where a generated story left the TinyTales grammar."""

    row: int  # which sample of the batch
    step: int  # index of the token among the generated tokens (0 = first after the prompt)
    token_id: int  # the drawn token
    char: str  # the drawn character (tinytales.END if the draw ended the story)
    rank: int  # its rank in the model's distribution at that step (1 = most likely)
    prob: float  # the model's probability of it at temperature 1
    prefix: str  # the story before it, prompt included
    story: str  # the whole story, prompt included, without END


def _check_ks(ks: object) -> list[int]:
    """`ks` as a non-empty list of ints >= 1, or TypeError/ValueError naming it."""
    if isinstance(ks, str | bytes) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise TypeError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}")
    return [check_int(f"ks[{i}]", k, low=1) for i, k in enumerate(ks)]


def _check_token_ids(token_ids: object, steps: int, vocab_size: int) -> Tensor:
    """`token_ids` as a long tensor of shape (steps,), or TypeError/ValueError naming it."""
    ids = torch.as_tensor(token_ids)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"token_ids must hold integers, got dtype {ids.dtype}")
    if tuple(ids.shape) != (steps,):
        raise ValueError(
            f"token_ids must have shape ({steps},), one id per step of logits, "
            f"got shape {tuple(ids.shape)}"
        )
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        bad = int(ids[(ids < 0) | (ids >= vocab_size)][0])
        raise ValueError(f"token_ids must be in 0..{vocab_size - 1}, got {bad}")
    return ids.long()


def tail_mass_by_step(logits: Tensor, *, ks: Sequence[int]) -> Tensor:
    """Probability outside the top k at every step, for every k: (steps, V) -> (len(ks), steps)."""
    logits = check_logits("logits", logits, dims=(2,))
    ks = _check_ks(ks)
    # float64 so that tails of 1e-6 are not rounded away next to a top token near 1.
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    return torch.stack([tail_mass(probs, k) for k in ks])


def summarize_tail(
    logits: Tensor, *, ks: Sequence[int], threshold: float = 0.01
) -> list[TailSummary]:
    """Mean and max tail mass over the steps, and how many steps exceed `threshold`, per k."""
    threshold = check_real("threshold", threshold, low=0, high=1)
    masses = tail_mass_by_step(logits, ks=ks)
    return [
        TailSummary(
            k=k,
            mean=float(row.mean()),
            max=float(row.max()),
            steps_above=int((row > threshold).sum()),
            steps=int(row.numel()),
            threshold=threshold,
        )
        for k, row in zip(_check_ks(ks), masses)
    ]


def token_ranks(logits: Tensor, token_ids: Sequence[int] | Tensor) -> Tensor:
    """Rank of each step's drawn token, 1 = most likely; ties share the best rank: (steps,)."""
    logits = check_logits("logits", logits, dims=(2,))
    ids = _check_token_ids(token_ids, logits.shape[0], logits.shape[1])
    drawn = logits.gather(-1, ids[:, None])
    # One plus the number of strictly larger logits: a token survives top-k iff its rank <= k.
    return 1 + (logits > drawn).sum(dim=-1)


def token_probs(logits: Tensor, token_ids: Sequence[int] | Tensor) -> Tensor:
    """Probability (temperature 1, no filter) of each step's drawn token: (steps,) float64."""
    logits = check_logits("logits", logits, dims=(2,))
    ids = _check_token_ids(token_ids, logits.shape[0], logits.shape[1])
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    return probs.gather(-1, ids[:, None])[:, 0]


def first_impossible_index(text: str, *, ended: bool) -> int | None:
    """Index of the first character of `text` that no TinyTales story has there, or None.

    With `ended`, the text was closed by END, which counts as a character at index len(text):
    a text that is a proper prefix of stories but not a whole story is impossible there.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not isinstance(ended, bool):
        raise TypeError(f"ended must be a bool, got {ended!r}")
    good = tinytales.longest_possible_prefix(text)
    if good < len(text):
        return good
    if ended and tinytales.END not in tinytales.next_char_distribution(text):
        return len(text)
    return None


def _story_break(generation: Generation, row: int) -> StoryBreak | None:
    """Row `row`'s break (see `story_breaks`), or None."""
    prompt, ids = generation.prompts[row], generation.token_ids[row]
    story = prompt + generation.texts[row]
    index = first_impossible_index(story, ended=generation.finished[row])
    # A row whose prompt is already impossible has no drawn token to blame.
    if index is None or index < len(prompt):
        return None
    step = index - len(prompt)
    logits = row_logits(generation, row)
    return StoryBreak(
        row=row,
        step=step,
        token_id=int(ids[step]),
        char=story[index] if index < len(story) else tinytales.END,
        rank=int(token_ranks(logits, ids)[step]),
        prob=float(token_probs(logits, ids)[step]),
        prefix=story[:index],
        story=story,
    )


def story_breaks(generation: Generation) -> list[StoryBreak | None]:
    """Per row, the drawn token at which the story left the grammar, or None if it never did.

    `generation` must come from `generate(..., record_logits=True)`. The break is the first
    character (or END) that no TinyTales story has at that point.
    """
    check_recorded(generation)
    return [_story_break(generation, row) for row in range(len(generation.texts))]


def find_tail_break(generation: Generation, *, k: int) -> StoryBreak | None:
    """The first row's break whose token was drawn from outside the top k (rank > k), or None."""
    k = check_int("k", k, low=1)
    return next((b for b in story_breaks(generation) if b is not None and b.rank > k), None)


def mark_token(text: str, index: int, *, width: int = 30) -> str:
    """Up to `width` characters either side of text[index], that character in [brackets].

    index == len(text) marks the end of the text as [END].
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    index = check_int("index", index, low=0, high=len(text))
    width = check_int("width", width, low=0)
    before = text[max(0, index - width) : index]
    head = "..." if index > width else ""
    if index == len(text):
        return f"{head}{before}[END]"
    after = text[index + 1 : index + 1 + width]
    tail = "..." if index + 1 + width < len(text) else ""
    return f"{head}{before}[{text[index]}]{after}{tail}"


def valid_stories(generation: Generation) -> list[bool]:
    """Per row, whether prompt + text is a complete TinyTales story that ended within budget."""
    if not isinstance(generation, Generation):
        raise TypeError(f"generation must be a Generation, got {type(generation).__name__}")
    return [
        ended and tinytales.is_valid_story(prompt + text)
        for prompt, text, ended in zip(generation.prompts, generation.texts, generation.finished)
    ]


@dataclass(frozen=True)
class BreakCounts:
    """Stories of a batch sorted by how they fared: the five counts add up to `samples`."""

    k: int  # the rank that separates "inside the top k" from the tail
    samples: int  # stories in the batch
    valid: int  # complete stories of the grammar
    unfinished: int  # no impossible character, but no end within the token budget either
    rank_1: int  # left the grammar at the model's own favourite
    inside: int  # left it at a token of rank 2 to k
    outside: int  # left it at a token of rank > k: a draw that top-k removes


def count_breaks(generation: Generation, *, k: int) -> BreakCounts:
    """Count the stories of `generation` by where they left the grammar: rank 1, 2..k or > k."""
    k = check_int("k", k, low=1)
    breaks = story_breaks(generation)
    ranks = [b.rank for b in breaks if b is not None]
    return BreakCounts(
        k=k,
        samples=len(breaks),
        valid=sum(valid_stories(generation)),
        unfinished=sum(b is None and not ended for b, ended in zip(breaks, generation.finished)),
        rank_1=sum(rank == 1 for rank in ranks),
        inside=sum(1 < rank <= k for rank in ranks),
        outside=sum(rank > k for rank in ranks),
    )


def first_tail_draws(generation: Generation, *, k: int) -> list[int | None]:
    """Per row, the first step whose drawn token ranked outside the top k, or None."""
    k = check_int("k", k, low=1)
    steps = []
    for row, ids in enumerate(check_recorded(generation).token_ids):
        outside = (token_ranks(row_logits(generation, row), ids) > k).nonzero()
        steps.append(int(outside[0, 0]) if len(outside) else None)
    return steps


@dataclass(frozen=True)
class PairedRuns:
    """Twin batches drawn with the same random numbers: without a filter, and with top-k."""

    k: int
    unfiltered: Generation  # top-k off; logits recorded
    filtered: Generation  # top_k=k; the raw (unfiltered) logits recorded, to rank its draws


def _cut_at_boundary(generation: Generation, boundary_id: int) -> Generation:
    """A generation run with stop_at_boundary=False, cut after each row's first boundary token."""
    texts, token_ids, finished = [], [], []
    for text, ids in zip(generation.texts, generation.token_ids):
        end = ids.index(boundary_id) if boundary_id in ids else None
        token_ids.append(ids if end is None else ids[: end + 1])
        texts.append(text if end is None else text[:end])
        finished.append(end is not None)
    return Generation(list(generation.prompts), texts, token_ids, finished, generation.logits)


def _stack(parts: list[Generation]) -> Generation:
    """The rows of several generations of the same length, as one generation."""
    return Generation(
        prompts=[p for part in parts for p in part.prompts],
        texts=[t for part in parts for t in part.texts],
        token_ids=[ids for part in parts for ids in part.token_ids],
        finished=[f for part in parts for f in part.finished],
        logits=torch.cat([part.logits for part in parts]),
    )


def paired_top_k(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    k: int,
    samples: int,
    max_new_tokens: int,
    seed: int,
    chunk_size: int = 32,
    progress: bool = False,
) -> PairedRuns:
    """`samples` stories from scratch at temperature 1, twice: without a filter and with top-k.

    Chunk i of both batches is drawn with a generator seeded `seed + i`, every row runs all
    `max_new_tokens` steps (then is cut after its first boundary token), so both batches consume
    the same random numbers at every step. `torch.multinomial` draws the argmax of probs / noise,
    and renormalising the kept tokens divides them all by one number: a filtered row draws what
    its twin draws whenever that token survives top-k, so twins differ only from the twin's first
    draw outside the top k (`pair_divergence` checks it: a property of PyTorch's sampler, not a
    promise of its documentation).
    """
    k = check_int("k", k, low=1)
    sizes = batch_sizes(
        check_int("samples", samples, low=1), check_int("chunk_size", chunk_size, low=1)
    )
    runs = {}
    bar = progress_bar(total=2 * samples, desc="generating", unit="story", show=progress)
    # One thread even for chunks that generate would give two: the text then does not depend on
    # the machine, and this small model's steps lose more to a waiting thread than they gain.
    with torch_threads(GENERATION_THREADS):
        for top_k in (None, k):
            chunks = generate_batches(
                model, "", tokenizer=tokenizer, sizes=sizes,
                generators=seeded(seed + i for i in range(len(sizes))), bar=bar,
                max_new_tokens=max_new_tokens, top_k=top_k, stop_at_boundary=False,
                record_logits=True,
            )  # fmt: skip
            runs[top_k] = _stack([_cut_at_boundary(c, tokenizer.boundary_id) for c in chunks])
    bar.close()
    return PairedRuns(k=k, unfiltered=runs[None], filtered=runs[k])


def pair_divergence(runs: PairedRuns) -> list[int | None]:
    """Per pair of twins, the first step where they drew different tokens, or None if none."""
    if not isinstance(runs, PairedRuns):
        raise TypeError(f"runs must be a PairedRuns, got {type(runs).__name__}")
    steps = []
    for a, b in zip(runs.unfiltered.token_ids, runs.filtered.token_ids):
        differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        steps.append(differ[0] if differ else (None if len(a) == len(b) else min(len(a), len(b))))
    return steps


def format_breaks(runs: PairedRuns) -> str:
    """A text table of both twin batches: how many stories were valid, unfinished, or broke where."""
    if not isinstance(runs, PairedRuns):
        raise TypeError(f"runs must be a PairedRuns, got {type(runs).__name__}")
    k = runs.k
    header = f"{'':9}  valid  unfinished  broke at rank 1  rank 2-{k}  rank > {k}"
    lines = [header]
    for name, generation in (("no filter", runs.unfiltered), (f"top-{k}", runs.filtered)):
        c = count_breaks(generation, k=k)
        lines.append(
            f"{name:9}  {c.valid:5}  {c.unfinished:10}  {c.rank_1:15}  "
            f"{c.inside:{len(f'rank 2-{k}')}}  {c.outside:{len(f'rank > {k}')}}"
        )
    return "\n".join(lines)
