"""What lesson 10 measures about speculative decoding: acceptance, counted work, time, exactness.

Acceptance rates come with a standard error over runs (proposals of one run are not independent
draws); counted work uses `flops.forward_flops` for every pass a generation made; the exactness
check compares the first generated character with and without speculation against the target's
exact distribution (Pearson's chi-square).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lessonlib.analysis.batches import batch_sizes, generate_batches
from lessonlib.analysis.flops import ForwardFlops, forward_flops, time_side_by_side
from lessonlib.analysis.statistics import Estimate, chi_square_p_value, ratio_with_error
from lessonlib.generation import LanguageModel, generate, prompt_logits
from lessonlib.model import GPTConfig
from lessonlib.progress import progress_bar
from lessonlib.sampling import sampling_probs
from lessonlib.speculative import (
    SpeculativeGeneration,
    expected_tokens_per_pass,
    speculative_generate,
)
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int

__all__ = [
    "AcceptanceRow",
    "FirstCharacters",
    "acceptance_sweep",
    "counted_work",
    "first_characters",
    "format_acceptance",
    "format_first_characters",
    "time_speculation",
]


@dataclass(frozen=True)
class AcceptanceRow:
    """Acceptance and tokens per target pass of one draft, temperature and k, over many runs."""

    draft: str
    temperature: float
    k: int
    acceptance: Estimate  # kept proposals / judged proposals, se over runs
    tokens_per_pass: Estimate  # tokens produced / target passes, se over runs

    @property
    def formula(self) -> float:
        """(1 - a^(k+1)) / (1 - a) at the measured acceptance a."""
        return expected_tokens_per_pass(self.acceptance.value, self.k)


def _runs(
    target: LanguageModel,
    draft: LanguageModel,
    tokenizer: CharTokenizer,
    prompts: Sequence[str],
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> list[SpeculativeGeneration]:
    """One speculative generation per prompt, each with its own seeded generator."""
    return [
        speculative_generate(
            target, draft, prompt, tokenizer=tokenizer, k=k, max_new_tokens=max_new_tokens,
            temperature=temperature, generator=torch.Generator().manual_seed(seed + i),
        )
        for i, prompt in enumerate(prompts)
    ]  # fmt: skip


def acceptance_sweep(
    target: LanguageModel,
    drafts: Mapping[str, LanguageModel],
    tokenizer: CharTokenizer,
    *,
    prompts: Sequence[str],
    settings: Sequence[tuple[str, float, int]],
    max_new_tokens: int,
    seed: int = 0,
    progress: bool = False,
) -> list[AcceptanceRow]:
    """Acceptance per (draft name, temperature, k) in `settings`, each over one run per prompt.

    Run i of every setting uses seed `seed + i`; a run is the unit of the standard errors.
    """
    check_int("max_new_tokens", max_new_tokens, low=1)
    if not prompts or isinstance(prompts, str):
        raise ValueError(f"prompts must be a non-empty list of str, got {prompts!r}")
    rows = []
    bar = progress_bar(total=len(settings) * len(prompts), unit="run", show=progress)
    for name, temperature, k in settings:
        if name not in drafts:
            raise ValueError(f"settings name the draft {name!r}; drafts are {sorted(drafts)}")
        runs = _runs(
            target, drafts[name], tokenizer, prompts, k=k, temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed,
        )  # fmt: skip
        bar.update(len(prompts))
        kept = [sum(r.accepted for r in run.rounds) for run in runs]
        judged = [sum(r.examined for r in run.rounds) for run in runs]
        produced = [sum(len(r.produced) for r in run.rounds) for run in runs]
        passes = [run.target_passes for run in runs]
        rows.append(
            AcceptanceRow(
                draft=name,
                temperature=float(temperature),
                k=k,
                acceptance=ratio_with_error(kept, judged),
                tokens_per_pass=ratio_with_error(produced, passes),
            )
        )
    bar.close()
    return rows


def format_acceptance(rows: Sequence[AcceptanceRow]) -> str:
    """A table: acceptance a (se), tokens per target pass measured (se) and by the formula."""
    width = max([5] + [len(row.draft) for row in rows])
    lines = [f"{'draft':>{width}}  tau  k  acceptance (se)  tokens/pass (se)  formula"]
    for row in rows:
        a, t = row.acceptance, row.tokens_per_pass
        lines.append(
            f"{row.draft:>{width}} {row.temperature:4.1f} {row.k:2d}    "
            f"{a.value:.3f} ({a.standard_error:.3f})     {t.value:.2f} ({t.standard_error:.2f})"
            f"     {row.formula:.2f}"
        )
    return "\n".join(lines)


def counted_work(
    generation: SpeculativeGeneration,
    *,
    target: GPTConfig,
    draft: GPTConfig,
    prompt_length: int,
) -> dict[str, ForwardFlops]:
    """FLOPs of every pass of a speculative generation, and of plain decoding of the same tokens.

    `prompt_length` counts the tokens before the first round (the boundary token and the
    prompt). Each round's target pass reads the last committed token and the k proposals over
    the cached context; the draft reads one token per proposal. Plain decoding runs one target
    pass per produced token. Keys: "target", "draft", "plain".
    """
    check_int("prompt_length", prompt_length, low=1)
    zero = ForwardFlops(0, 0, 0, 0)
    spent = {"target": zero, "draft": zero, "plain": zero}
    committed = prompt_length
    for r in generation.rounds:
        past = committed - 1  # the cache holds everything but the last committed token
        spent["target"] += forward_flops(target, past_tokens=past, new_tokens=1 + len(r.drafted))
        for i in range(r.draft_passes):
            spent["draft"] += forward_flops(draft, past_tokens=past + i, new_tokens=1)
        for i in range(len(r.produced)):
            spent["plain"] += forward_flops(target, past_tokens=past + i, new_tokens=1)
        committed += len(r.produced)
    return spent


@dataclass(frozen=True)
class FirstCharacters:
    """The first generated character, drawn many times with and without speculation."""

    labels: tuple[str, ...]
    exact: Tensor  # the target's sampling distribution of the first character (V,)
    speculative: Tensor  # counts (V,)
    plain: Tensor  # counts (V,)

    def p_values(self) -> tuple[float, float]:
        """Chi-square p-values of (speculative, plain) against the exact distribution."""
        return (
            chi_square_p_value(self.speculative, self.exact),
            chi_square_p_value(self.plain, self.exact),
        )


def first_characters(
    target: LanguageModel,
    draft: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    runs: int,
    k: int,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> FirstCharacters:
    """`runs` first characters after `prompt` from speculative decoding and from `generate`."""
    runs = check_int("runs", runs, low=1)
    with torch_threads(GENERATION_THREADS):
        logits = prompt_logits(target, prompt, tokenizer=tokenizer).double()
        exact = sampling_probs(logits, temperature=temperature)
    counts = torch.zeros(target.vocab_size, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    for _ in progress_bar(range(runs), unit="run", show=progress):
        # A budget of k + 1 tokens lets the first round propose all k: with a budget of one
        # token there is nothing to propose, and the target samples alone.
        run = speculative_generate(
            target, draft, prompt, tokenizer=tokenizer, k=k, max_new_tokens=k + 1,
            temperature=temperature, generator=generator, stop_at_boundary=False,
        )  # fmt: skip
        counts[run.token_ids[0][0]] += 1
    # Plain sampling in batches of 100 rows with one generator: a single batch of 1,000 rows
    # would hold their whole prompts' activations at once (several hundred MB).
    # One generator shared by the batches, so the draws are those of a single batch of `runs`.
    sizes = batch_sizes(runs, 100)
    plain = generate_batches(
        target, prompt, tokenizer=tokenizer, sizes=sizes,
        generators=[torch.Generator().manual_seed(seed + 1)] * len(sizes),
        max_new_tokens=1, temperature=temperature, stop_at_boundary=False,
    )  # fmt: skip
    firsts = [ids[0] for batch in plain for ids in batch.token_ids]
    plain_counts = torch.bincount(torch.tensor(firsts), minlength=target.vocab_size)
    return FirstCharacters(tuple(tokenizer.chars), exact, counts, plain_counts)


def format_first_characters(result: FirstCharacters, *, top: int = 8) -> str:
    """The `top` most likely characters: exact probability and both empirical shares."""
    runs_spec, runs_plain = int(result.speculative.sum()), int(result.plain.sum())
    lines = [f"char  exact   speculative ({runs_spec})  plain ({runs_plain})"]
    for i in result.exact.argsort(descending=True)[:top].tolist():
        lines.append(
            f"{result.labels[i]!r:>4}  {result.exact[i]:.3f}   "
            f"{result.speculative[i] / runs_spec:.3f}              "
            f"{result.plain[i] / runs_plain:.3f}"
        )
    spec_p, plain_p = result.p_values()
    lines.append(f"chi-square p-value against exact: speculative {spec_p:.2f}, plain {plain_p:.2f}")
    return "\n".join(lines)


def time_speculation(
    target: LanguageModel,
    draft: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    prompt: str,
    k: int,
    max_new_tokens: int,
    rounds: int = 5,
    seed: int = 0,
) -> str:
    """Plain and speculative generation of the same text length, timed side by side, with a
    bare one-token forward pass of the target for scale; one line, best of `rounds` each."""

    def plain() -> object:
        generator = torch.Generator().manual_seed(seed)
        return generate(
            target, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens, generator=generator
        )

    def speculative() -> object:
        return speculative_generate(
            target, draft, prompt, tokenizer=tokenizer, k=k, max_new_tokens=max_new_tokens,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip

    def one_pass() -> object:
        return target(torch.zeros(1, 1, dtype=torch.long))

    runs = {"plain": plain, "speculative": speculative, "one pass": one_pass}
    best = {name: min(times) for name, times in time_side_by_side(runs, rounds=rounds).items()}
    return (
        f"plain {1000 * best['plain']:.0f} ms, speculative {1000 * best['speculative']:.0f} ms, "
        f"one bare pass {1000 * best['one pass']:.2f} ms; "
        f"speed-up {best['plain'] / best['speculative']:.2f}x"
    )
