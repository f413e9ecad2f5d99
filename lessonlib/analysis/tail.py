"""The long tail of recorded next-token distributions: where each drawn token ranked, and when a
draw from outside the top k is the one that broke a TinyTales story.

Pure functions on the raw logits that `generate(..., record_logits=True)` keeps, shape
(steps, V), read at temperature 1, and on the ids that were drawn. Rank 1 is the most likely
token; tied logits share the best rank, so "rank <= k" is exactly what
`lessonlib.sampling.filter_top_k` keeps. The grammar (`lessonlib.tinytales`) gives the truth.

One function runs the model: `paired_top_k` draws two batches with the same random numbers,
one without a filter and one with top-k, so that a difference between twin stories can only
come from the draws that top-k removes. This module is not a sampler: it calls `generate`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.distributions import tail_mass
from lessonlib.generation import Generation, LanguageModel, generate
from lessonlib.progress import progress_bar
from lessonlib.threads import torch_threads
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "BreakCounts",
    "PairedDifference",
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
    "paired_difference",
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


def _check_logits(logits: object, name: str = "logits") -> Tensor:
    """`logits` as a float tensor of shape (steps, V), or TypeError/ValueError naming it."""
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (steps, V), got {type(logits).__name__}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {logits.dtype}")
    if logits.dim() != 2 or logits.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (steps, V), got shape {tuple(logits.shape)}")
    return logits


def _check_ks(ks: object) -> list[int]:
    """`ks` as a non-empty list of ints >= 1, or TypeError/ValueError naming it."""
    if isinstance(ks, str | bytes) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise TypeError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"ks must hold ints >= 1, got {k!r} in {ks!r}")
    return [int(k) for k in ks]


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
    logits = _check_logits(logits)
    ks = _check_ks(ks)
    # float64 so that tails of 1e-6 are not rounded away next to a top token near 1.
    probs = torch.softmax(logits.to(torch.float64), dim=-1)
    return torch.stack([tail_mass(probs, k) for k in ks])


def summarize_tail(
    logits: Tensor, *, ks: Sequence[int], threshold: float = 0.01
) -> list[TailSummary]:
    """Mean and max tail mass over the steps, and how many steps exceed `threshold`, per k."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a number in [0, 1), got {threshold!r}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if _check_logits(logits).shape[0] == 0:
        raise ValueError("logits must have at least one step to summarise, got 0 steps")
    masses = tail_mass_by_step(logits, ks=ks)
    return [
        TailSummary(
            k=k,
            mean=float(row.mean()),
            max=float(row.max()),
            steps_above=int((row > threshold).sum()),
            steps=int(row.numel()),
            threshold=float(threshold),
        )
        for k, row in zip(_check_ks(ks), masses)
    ]


def token_ranks(logits: Tensor, token_ids: Sequence[int] | Tensor) -> Tensor:
    """Rank of each step's drawn token, 1 = most likely; ties share the best rank: (steps,)."""
    logits = _check_logits(logits)
    ids = _check_token_ids(token_ids, logits.shape[0], logits.shape[1])
    drawn = logits.gather(-1, ids[:, None])
    # One plus the number of strictly larger logits: a token survives top-k iff its rank <= k.
    return 1 + (logits > drawn).sum(dim=-1)


def token_probs(logits: Tensor, token_ids: Sequence[int] | Tensor) -> Tensor:
    """Probability (temperature 1, no filter) of each step's drawn token: (steps,) float64."""
    logits = _check_logits(logits)
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


def story_breaks(generation: Generation) -> list[StoryBreak | None]:
    """Per row, the drawn token at which the story left the grammar, or None if it never did.

    `generation` must come from `generate(..., record_logits=True)`. The break is the first
    character (or END) that no TinyTales story has at that point; a row whose prompt is
    already impossible has no drawn token to blame and gives None too.
    """
    if not isinstance(generation, Generation):
        raise TypeError(f"generation must be a Generation, got {type(generation).__name__}")
    if generation.logits is None:
        raise ValueError("generation has no logits; generate it with record_logits=True")
    breaks: list[StoryBreak | None] = []
    for row, (prompt, text, ids, ended) in enumerate(
        zip(generation.prompts, generation.texts, generation.token_ids, generation.finished)
    ):
        story = prompt + text
        index = first_impossible_index(story, ended=ended)
        if index is None or index < len(prompt):
            breaks.append(None)
            continue
        step = index - len(prompt)
        # Later steps of the batch tensor belong to other rows still running; cut them off.
        logits = generation.logits[row, : len(ids)]
        breaks.append(
            StoryBreak(
                row=row,
                step=step,
                token_id=int(ids[step]),
                char=story[index] if index < len(story) else tinytales.END,
                rank=int(token_ranks(logits, ids)[step]),
                prob=float(token_probs(logits, ids)[step]),
                prefix=story[:index],
                story=story,
            )
        )
    return breaks


def find_tail_break(generation: Generation, *, k: int) -> StoryBreak | None:
    """The first row's break whose token was drawn from outside the top k (rank > k), or None."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    return next((b for b in story_breaks(generation) if b is not None and b.rank > k), None)


def mark_token(text: str, index: int, *, width: int = 30) -> str:
    """Up to `width` characters either side of text[index], that character in [brackets].

    index == len(text) marks the end of the text as [END].
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= len(text):
        raise ValueError(f"index must be an int in 0..{len(text)}, got {index!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be an int >= 0, got {width!r}")
    before = text[max(0, index - width) : index]
    if index == len(text):
        return f"{'...' if index > width else ''}{before}[END]"
    after = text[index + 1 : index + 1 + width]
    head = "..." if index > width else ""
    tail = "..." if index + 1 + width < len(text) else ""
    return f"{head}{before}[{text[index]}]{after}{tail}"


def _check_k(k: object) -> int:
    """`k` as an int >= 1, or ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    return int(k)


def _check_generation(generation: object) -> Generation:
    """`generation` with recorded logits, or TypeError/ValueError naming it."""
    if not isinstance(generation, Generation):
        raise TypeError(f"generation must be a Generation, got {type(generation).__name__}")
    if generation.logits is None:
        raise ValueError("generation has no logits; generate it with record_logits=True")
    return generation


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
    k = _check_k(k)
    breaks = story_breaks(_check_generation(generation))
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
    k = _check_k(k)
    generation = _check_generation(generation)
    steps = []
    for row, ids in enumerate(generation.token_ids):
        outside = (token_ranks(generation.logits[row, : len(ids)], ids) > k).nonzero()
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

    Rows are drawn in chunks of `chunk_size`; chunk i of both batches uses a generator seeded
    with `seed + i`, and every row runs all `max_new_tokens` steps (stop_at_boundary=False)
    before it is cut after its first boundary token, so that both batches consume the same
    random numbers at every step. `torch.multinomial` draws one token as the argmax of
    probs / noise with that shared noise, and renormalising the kept tokens divides them all by
    one number; so a filtered row draws what its twin draws whenever that token survives top-k,
    and twins differ only from the twin's first draw outside the top k (`pair_divergence`
    checks it: it is a property of PyTorch's sampler, not a promise of its documentation).
    Generation runs on one torch thread: the text then does not depend on the machine's core
    count, and the steps of this small model lose far more to a second thread waiting for a
    busy core than they gain from it.
    """
    k = _check_k(k)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    sizes = [min(chunk_size, samples - start) for start in range(0, samples, chunk_size)]
    arms: dict[int | None, list[Generation]] = {None: [], k: []}
    bar = progress_bar(total=2 * len(sizes), desc="generating", show=progress)
    with torch_threads(1):
        for index, size in enumerate(sizes):
            for top_k, parts in arms.items():
                raw = generate(
                    model,
                    [""] * size,
                    tokenizer=tokenizer,
                    max_new_tokens=max_new_tokens,
                    top_k=top_k,
                    generator=torch.Generator().manual_seed(seed + index),
                    stop_at_boundary=False,
                    record_logits=True,
                )
                parts.append(_cut_at_boundary(raw, tokenizer.boundary_id))
                bar.update()
    bar.close()
    return PairedRuns(k=k, unfiltered=_stack(arms[None]), filtered=_stack(arms[k]))


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


@dataclass(frozen=True)
class PairedDifference:
    """The mean of `second - first` over pairs, and its standard error."""

    samples: int  # pairs
    first: float  # mean of the first measurement
    second: float  # mean of the second measurement
    difference: float  # mean of second - first
    se: float  # standard error of `difference` (sample standard deviation / sqrt(samples))

    def describe(self, *, digits: int = 2) -> str:
        """One line: both means, the difference, its standard error and the difference in se."""
        if isinstance(digits, bool) or not isinstance(digits, int):
            raise TypeError(f"digits must be an int in 0..6, got {digits!r}")
        if not 0 <= digits <= 6:
            raise ValueError(f"digits must be an int in 0..6, got {digits!r}")
        # With no spread at all the difference is exact: there is no count of errors to give.
        in_se = f", {self.difference / self.se:+.1f} standard errors" if self.se > 0 else ""
        return (
            f"{self.first:.{digits}f} -> {self.second:.{digits}f}, paired difference "
            f"{self.difference:+.{digits}f}, standard error {self.se:.{digits}f} "
            f"({self.samples} pairs{in_se})"
        )


def paired_difference(
    first: Sequence[float | bool], second: Sequence[float | bool]
) -> PairedDifference:
    """Mean paired difference `second - first` and its standard error, for >= 2 pairs."""
    if len(first) != len(second) or len(first) < 2:
        raise ValueError(
            f"first and second must have the same length >= 2, got {len(first)} and {len(second)}"
        )
    a = torch.tensor([float(x) for x in first], dtype=torch.float64)
    b = torch.tensor([float(x) for x in second], dtype=torch.float64)
    d = b - a
    n = len(d)
    return PairedDifference(
        samples=n,
        first=float(a.mean()),
        second=float(b.mean()),
        difference=float(d.mean()),
        se=float(d.std(correction=1) / n**0.5),
    )
