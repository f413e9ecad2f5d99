"""What each stage of the sampler's chain keeps, and the smallest case where two orders differ.

`kept_after_each_stage` reads `lessonlib.sampling.stage_by_stage`: a token is kept after a stage
when it can still be drawn. `find_order_counterexample` searches random next-token distributions
with few tokens and probabilities on a coarse grid (0.1, then 0.05, 0.01, 0.001) for one where
two orders of the same stages end with different token sets. `orders_always_agree` says when no
such case can exist: the orders differ only by stages that are off, or by swapping two stages
that commute (temperature with top-k, top-k with min-p). This module is not about how often the
orders differ on the model's own steps (see `lessonlib.analysis.stage_order`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from lessonlib.sampling import STAGES, check_order, check_sampler, stage_by_stage
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.validation import check_int, check_temperature

__all__ = [
    "COMMUTING_PAIRS",
    "GRID_STEPS",
    "OrderCounterexample",
    "active_stages",
    "check_chain_settings",
    "find_order_counterexample",
    "format_counterexample",
    "kept_after_each_stage",
    "orders_always_agree",
]

# Pairs of stages that keep the same tokens in either order, for any logits (exact arithmetic).
# Top-k reads only the ranking of the logits, which dividing by tau > 0 keeps. Min-p keeps the
# tokens with z >= max z + log(min_p), a top slice of the ranking; top-k keeps the maximum, so
# min-p after top-k cuts at the same z, and the k best of the slice are the slice's share of
# the k best.
COMMUTING_PAIRS = frozenset({frozenset({"temperature", "top_k"}), frozenset({"top_k", "min_p"})})

# The grids the finder puts probabilities on, coarsest first: a case on 0.1 prints in one decimal.
GRID_STEPS = (0.1, 0.05, 0.01, 0.001)

_NUDGE = 1e-6  # size of the random changes to the logits that a found case must survive
_NUDGES = 8  # how many such changes are tried
_MAX_LETTERS = 26  # tokens are labelled a, b, c, ...


def kept_after_each_stage(
    logits: Tensor, *, order: Sequence[str], **settings: object
) -> list[tuple[str, Tensor]]:
    """(stage, boolean mask of the tokens still possible after it) for each stage of `order`.

    Accepts (V,) or (B, V) logits and the settings of `stage_by_stage` (temperature > 0). A
    token counts as kept when its probability after the stage is > 0 in the logits' own
    precision: one whose probability underflows to 0 can never be drawn either.
    """
    return [(stage, probs > 0) for stage, probs in stage_by_stage(logits, order=order, **settings)]


def check_chain_settings(settings: object) -> dict[str, object]:
    """All six settings by stage name, checked, with the ones not given off; temperature > 0."""
    if not isinstance(settings, Mapping):
        raise TypeError(
            f"settings must be a mapping from stage names in {STAGES} to their values, "
            f"got {type(settings).__name__}"
        )
    unknown = [name for name in settings if name not in STAGES]
    if unknown:
        raise ValueError(f"settings may only name stages from {STAGES}, got {unknown[0]!r}")
    # Greedy (temperature 0) has no chain to order: every order gives the argmax.
    check_temperature(settings.get("temperature", 1.0), greedy=False)
    checked = check_sampler(**settings)
    del checked["order"]
    return checked


def active_stages(order: Sequence[str], settings: Mapping[str, object]) -> tuple[str, ...]:
    """The stages of `order` that are switched on (tau = 1 and p = 1 are off, like None)."""
    checked = check_chain_settings(settings)
    return _active(check_order(order, checked), checked)


def _active(order: tuple[str, ...], settings: Mapping[str, object]) -> tuple[str, ...]:
    """`active_stages` on checked arguments."""
    off = {"temperature": 1.0, "top_p": 1.0, "typical_p": 1.0}
    return tuple(s for s in order if settings[s] is not None and settings[s] != off.get(s))


def orders_always_agree(
    order_a: Sequence[str], order_b: Sequence[str], *, settings: Mapping[str, object]
) -> bool:
    """True when the two orders keep the same tokens for every logits (in exact arithmetic).

    That holds when, after dropping the stages that are off, every two stages that do not
    commute (see COMMUTING_PAIRS) come in the same order in both.
    """
    settings = check_chain_settings(settings)
    first = _active(check_order(order_a, settings), settings)
    second = _active(check_order(order_b, settings), settings)
    # check_order puts every stage that is on in both orders, so both hold the same stages.
    position = {stage: i for i, stage in enumerate(second)}
    for i, x in enumerate(first):
        for y in first[i + 1 :]:
            if frozenset({x, y}) not in COMMUTING_PAIRS and position[x] > position[y]:
                return False
    return True


@dataclass(frozen=True, eq=False)
class OrderCounterexample:
    """A next-token distribution on which two orders of the chain keep different final sets."""

    order_a: tuple[str, ...]
    order_b: tuple[str, ...]
    settings: Mapping[str, object]  # all six stages, as check_chain_settings returns them
    probs: Tensor  # (V,) float64 P, distinct multiples of `grid` in descending order
    logits: Tensor  # (V,) float64 z = log P
    grid: float  # the grid step of the probabilities
    labels: tuple[str, ...]  # a, b, c, ...
    kept_a: tuple[tuple[str, tuple[int, ...]], ...]  # per stage of order_a: token ids kept after it
    kept_b: tuple[tuple[str, tuple[int, ...]], ...]  # the same for order_b
    final_a: Tensor  # (V,) float64 P after the whole chain in order_a
    final_b: Tensor  # the same for order_b
    cases_tried: int  # cases compared up to this one, itself included

    @property
    def vocab_size(self) -> int:
        """V, the number of tokens."""
        return int(self.probs.numel())


def _letters(n: int) -> tuple[str, ...]:
    return tuple(chr(ord("a") + i) for i in range(n))


def _every_grid_case(vocab_size: int, steps: int, limit: int) -> Tensor | None:
    """Every row (m, V) of distinct multiples of 1/steps adding up to 1, or None if > `limit`.

    Each row is descending, and the rows come lexicographically from the most peaked.
    """
    rows: list[tuple[int, ...]] = []

    def extend(prefix: tuple[int, ...], left: int, slots: int) -> bool:
        """Append the completions of `prefix`; False once there are too many."""
        if slots == 0:
            rows.append(prefix)
            return len(rows) <= limit
        # The next part is below the previous one and leaves room for slots - 1 smaller distinct
        # parts (at least 1, 2, ..., slots - 1), yet is big enough that they can fill the rest.
        high = min(prefix[-1] - 1 if prefix else left, left - slots * (slots - 1) // 2)
        low = -(-(left + slots * (slots - 1) // 2) // slots)  # ceiling division
        return all(
            extend((*prefix, part), left - part, slots - 1) for part in range(high, low - 1, -1)
        )

    if not extend((), steps, vocab_size):
        return None
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, vocab_size) / steps


def _grid_cases(vocab_size: int, steps: int, tries: int, generator: torch.Generator) -> Tensor:
    """Up to `tries` random rows (m, V) of distinct multiples of 1/steps adding up to 1."""
    # One step per token is set aside so that none is 0; the rest is shared out in proportion
    # to random weights, from nearly uniform (scale near 0) to very peaked (scale near 5).
    spare = steps - vocab_size
    scale = 5 * torch.rand(tries, 1, generator=generator, dtype=torch.float64)
    noise = torch.randn(tries, vocab_size, generator=generator, dtype=torch.float64)
    shares = torch.softmax(scale * noise, dim=-1) * spare
    counts = shares.floor()
    # Largest remainders first: the steps that flooring left over go to the biggest fractions.
    left_over = spare - counts.sum(dim=-1, keepdim=True)
    rank = (shares - counts).argsort(dim=-1, descending=True).argsort(dim=-1)
    counts = (counts + (rank < left_over) + 1).sort(dim=-1, descending=True).values
    # Ties would make the example hinge on how each rule breaks them: distinct values only.
    distinct = (counts[:, 1:] < counts[:, :-1]).all(dim=-1)
    return counts[distinct] / steps


def _final_kept(logits: Tensor, order: tuple[str, ...], settings: dict[str, object]) -> Tensor:
    return kept_after_each_stage(logits, order=order, **settings)[-1][1]


def _survives_nudges(
    logits: Tensor,
    orders: tuple[tuple[str, ...], tuple[str, ...]],
    settings: dict[str, object],
    generator: torch.Generator,
) -> bool:
    """Whether both orders keep the same sets when the logits move by about 1e-6.

    A case that sits exactly on a threshold (a ratio of exactly min_p, say) differs only by
    rounding; it would teach nothing and could flip on another machine.
    """
    noise = _NUDGE * torch.randn(_NUDGES, logits.numel(), generator=generator, dtype=logits.dtype)
    nudged = logits + noise
    return all(
        bool((_final_kept(nudged, order, settings) == _final_kept(logits, order, settings)).all())
        for order in orders
    )


@torch_threads(GENERATION_THREADS)  # many operations on tiny tensors: see GENERATION_THREADS
def find_order_counterexample(
    order_a: Sequence[str],
    order_b: Sequence[str],
    *,
    settings: Mapping[str, object],
    seed: int = 0,
    tries: int = 500,
    max_vocab: int = 8,
) -> OrderCounterexample | None:
    """The smallest case found where the two orders keep different final token sets, or None.

    Smallest means the fewest tokens V (2, 3, ..., `max_vocab`), then the coarsest grid of
    probabilities (GRID_STEPS). A (V, grid) with at most `tries` cases is tried whole, most
    peaked first; a larger one by `tries` random cases from a generator seeded with `seed`, so
    the result is the same for the same arguments.
    None comes at once when `orders_always_agree`; otherwise it only means that nothing was
    found (thresholds finer than the finest grid, such as eta_cutoff=3e-4, are out of reach).
    """
    checked = check_chain_settings(settings)
    order_a, order_b = check_order(order_a, checked), check_order(order_b, checked)
    seed = check_int("seed", seed, low=0)
    tries = check_int("tries", tries, low=1)
    max_vocab = check_int("max_vocab", max_vocab, low=2, high=_MAX_LETTERS)
    if orders_always_agree(order_a, order_b, settings=checked):
        return None
    # Only the stages that are on: the others copy the logits and cost time in every batch.
    active = (_active(order_a, checked), _active(order_b, checked))
    generator = torch.Generator().manual_seed(seed)
    tried = 0
    for vocab_size in range(2, max_vocab + 1):
        for grid in GRID_STEPS:
            steps = round(1 / grid)
            if steps < vocab_size * (vocab_size + 1) // 2:
                continue  # V distinct positive multiples of the grid cannot add up to 1
            # A level with no more cases than `tries` is tried whole: its smallest case is found.
            probs = _every_grid_case(vocab_size, steps, tries)
            if probs is None:
                probs = _grid_cases(vocab_size, steps, tries, generator)
            if probs.numel() == 0:
                continue
            logits = probs.log()
            first, second = (_final_kept(logits, order, checked) for order in active)
            differ = (first != second).any(dim=-1)
            for row in range(probs.shape[0]):
                if bool(differ[row]) and _survives_nudges(logits[row], active, checked, generator):
                    return _counterexample(
                        order_a, order_b, checked, probs[row], grid, tried + row + 1
                    )
            tried += probs.shape[0]
    return None


def _counterexample(
    order_a: tuple[str, ...],
    order_b: tuple[str, ...],
    settings: dict[str, object],
    probs: Tensor,
    grid: float,
    tried: int,
) -> OrderCounterexample:
    """The record of a found case, with the kept sets after every stage of both full orders."""
    logits = probs.log()
    per_order = []
    for order in (order_a, order_b):
        kept = tuple(
            (stage, tuple(torch.nonzero(mask).flatten().tolist()))
            for stage, mask in kept_after_each_stage(logits, order=order, **settings)
        )
        final = stage_by_stage(logits, order=order, **settings)[-1][1]
        per_order.append((kept, final))
    return OrderCounterexample(
        order_a=order_a,
        order_b=order_b,
        settings=MappingProxyType(dict(settings)),
        probs=probs.clone(),
        logits=logits,
        grid=grid,
        labels=_letters(probs.numel()),
        kept_a=per_order[0][0],
        kept_b=per_order[1][0],
        final_a=per_order[0][1],
        final_b=per_order[1][1],
        cases_tried=tried,
    )


def format_counterexample(
    case: OrderCounterexample, *, names: tuple[str, str] = ("order A", "order B")
) -> str:
    """A few lines: the distribution, the settings on, and what each order keeps stage by stage."""
    if not isinstance(case, OrderCounterexample):
        raise TypeError(f"case must be an OrderCounterexample, got {type(case).__name__}")
    if not (
        isinstance(names, tuple) and len(names) == 2 and all(isinstance(n, str) for n in names)
    ):
        raise TypeError(f"names must be a tuple of two str, got {names!r}")
    digits = max(1, math.ceil(-math.log10(case.grid) - 1e-9))
    labels = case.labels
    on = _active(STAGES, case.settings)
    probs = ", ".join(f"{p:.{digits}f}" for p in case.probs.tolist())
    logits = ", ".join(f"{z:.2f}" for z in case.logits.tolist())
    tokens = ", ".join(labels)
    lines = [
        f"V = {case.vocab_size} tokens {tokens} with P = ({probs}), logits z = log P = ({logits})",
        "settings: "
        + ", ".join(f"{stage}={case.settings[stage]:g}" for stage in on)
        + ("; the other stages off" if len(on) < len(STAGES) else ""),
    ]
    width = max(len(name) for name in names) + 1
    for name, kept, final in zip(names, (case.kept_a, case.kept_b), (case.final_a, case.final_b)):
        steps = [
            f"{stage} keeps {{{', '.join(labels[i] for i in ids)}}}"
            for stage, ids in kept
            if stage in on
        ]
        shown = ", ".join(f"{labels[i]} {p:.2f}" for i, p in enumerate(final.tolist()) if p > 0)
        lines.append(f"{name + ':':<{width}} " + " -> ".join(steps) + f"; final P: {shown}")
    return "\n".join(lines)
