"""Sampler speed: lessonlib's pipeline against Hugging Face transformers' logits warpers.

Both sides turn logits over a GPT-2-sized vocabulary (50,257 tokens) into one drawn token per
row with temperature 0.8, top-k 50 and top-p 0.9:
- lessonlib: `lessonlib.sampling.sample_next`, validation included;
- transformers: TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper applied in that
  order, then softmax and `torch.multinomial`, as `generate(do_sample=True)` does (called
  directly, without LogitsProcessorList, whose per-call signature inspection would add time
  that has nothing to do with sampling).

First the script checks that both keep exactly the same tokens on the same random rows, at
batch 1 and 32, and exits 1 if they do not. Kept means finite after filtering: for lessonlib
the public filters filter_top_p(filter_top_k(apply_temperature(...))) on the row shifted to
maximum 0, as the pipeline does, and sampling_probs must put nonzero probability on exactly
those tokens; for transformers the finite scores after the three warpers. The rules agree:
- top-k: both keep every token tied with the k-th largest logit (a strict "<" comparison);
  TopKLogitsWarper uses max(top_k, min_tokens_to_keep) = 50 with the default
  min_tokens_to_keep=1.
- top-p: lessonlib keeps a token iff the mass of the tokens ranked before it is < p.
  TopPLogitsWarper sorts ascending and drops a token iff the cumulative mass up to and
  including it is <= 1 - p, i.e. iff the mass ranked above it is >= p: the same rule. Both keep
  the top token (lessonlib by the rule, transformers through min_tokens_to_keep=1).
- exact boundaries: if a prefix mass equals p exactly, both drop the next token. In floating
  point they round differently (transformers sums float32 probabilities upward and compares
  with 1 - p in float32; lessonlib sums float64 weights downward), so a row with a prefix
  mass within 1e-6 of p may keep one token more on one side. Such rows are counted and left
  out of the exact comparison; on continuous random logits they are rare.
- ties across the top-p cut: when equal logits straddle the cut, both keep the same number of
  them, but lessonlib keeps the lowest token ids (a stable descending sort) and transformers
  whichever its ascending sort puts last. Rows on a quarter-integer grid, where such ties are
  common, are therefore compared by kept count and kept values.

Then both are timed: the median of repeats, interleaved so that machine noise hits both sides
alike, on the thread count lessonlib's generation loop uses. Run from the repository root:
    .venv/bin/pip install 'transformers>=5.23,<6'    # benchmark-only, not a course dependency
    .venv/bin/python benchmarks/sampler.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

from lessonlib.sampling import (
    apply_temperature,
    filter_top_k,
    filter_top_p,
    sample_next,
    sampling_probs,
)
from lessonlib.threads import GENERATION_THREADS, torch_threads

try:
    import transformers
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )
except ImportError:
    transformers = None

VOCAB_SIZE = 50_257
TEMPERATURE = 0.8
TOP_K = 50
TOP_P = 0.9
BATCH_SIZES = (1, 32)
# A prefix mass this close to p is a floating-point boundary case (see the docstring).
BOUNDARY = 1e-6


def random_logits(batch: int, generator: torch.Generator, *, grid: bool = False) -> Tensor:
    """float32 logits, one spread per row from flat (top-p keeps all 50) to peaked (it keeps 1)."""
    scales = torch.empty(batch, 1).uniform_(0.5, 8.0, generator=generator)
    logits = torch.randn(batch, VOCAB_SIZE, generator=generator) * scales
    # Quarter-integer values tie often, also across the top-p cut.
    return torch.round(logits * 4) / 4 if grid else logits


def lessonlib_kept(logits: Tensor) -> Tensor:
    """Tokens lessonlib keeps: finite after its public filters, checked against the pipeline."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    filtered = filter_top_p(filter_top_k(apply_temperature(shifted, TEMPERATURE), TOP_K), TOP_P)
    kept = torch.isfinite(filtered)
    probs = sampling_probs(logits, temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P)
    if not torch.equal(probs > 0, kept):
        sys.exit("check failed: sampling_probs gives probability to other tokens than the filters")
    return kept


def transformers_warp(logits: Tensor) -> Tensor:
    """Scores after transformers' temperature, top-k and top-p warpers, in that order."""
    input_ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)  # unused by these warpers
    warpers = (
        TemperatureLogitsWarper(TEMPERATURE),
        TopKLogitsWarper(top_k=TOP_K, min_tokens_to_keep=1),
        TopPLogitsWarper(top_p=TOP_P, min_tokens_to_keep=1),
    )
    scores = logits
    for warper in warpers:
        scores = warper(input_ids, scores)
    return scores


def near_boundary(logits: Tensor) -> Tensor:
    """Rows with a top-p prefix mass within BOUNDARY of p, computed in float64."""
    tempered = logits.double() / TEMPERATURE
    kth = torch.topk(tempered, TOP_K, dim=-1).values[:, -1:]
    survivors = tempered.masked_fill(tempered < kth, float("-inf"))
    masses = torch.softmax(survivors.sort(dim=-1, descending=True).values, dim=-1).cumsum(dim=-1)
    return ((masses - TOP_P).abs() < BOUNDARY).any(dim=-1)


def check_same_tokens(batches: int, seed: int) -> str:
    """Compare kept sets row by row; exit 1 naming the first differing row, else a summary."""
    generator = torch.Generator().manual_seed(seed)
    exact = boundary = boundary_agree = tied = tied_same_ids = 0
    for index in range(batches):
        batch = BATCH_SIZES[index % len(BATCH_SIZES)]
        for grid in (False, True):
            logits = random_logits(batch, generator, grid=grid)
            ours = lessonlib_kept(logits)
            warped = transformers_warp(logits)
            theirs = torch.isfinite(warped)
            edge = near_boundary(logits)
            for row in range(batch):
                same = torch.equal(ours[row], theirs[row])
                if edge[row]:
                    boundary += 1
                    boundary_agree += same
                    continue
                if not grid:
                    exact += 1
                    if not same:
                        fail(logits[row], ours[row], theirs[row], "continuous")
                    continue
                # Ties across the cut: same count and same kept values, ids may differ.
                tied += 1
                tied_same_ids += same
                ours_values = logits[row][ours[row]].sort().values
                theirs_values = logits[row][theirs[row]].sort().values
                if not torch.equal(ours_values, theirs_values):
                    fail(logits[row], ours[row], theirs[row], "quarter-integer")
    return (
        f"check: same kept tokens on all {exact} continuous rows; same kept count and values on "
        f"all {tied} quarter-integer rows ({tied_same_ids} also the same ids); "
        f"{boundary} rows within {BOUNDARY:g} of the top-p boundary left out "
        f"({boundary_agree} of them agree anyway)"
    )


def fail(row: Tensor, ours: Tensor, theirs: Tensor, kind: str) -> None:
    """Print how one row's kept sets differ and exit 1."""
    only_ours = torch.nonzero(ours & ~theirs).flatten().tolist()
    only_theirs = torch.nonzero(theirs & ~ours).flatten().tolist()
    print(
        f"check FAILED on a {kind} row: lessonlib keeps {int(ours.sum())} tokens, transformers "
        f"{int(theirs.sum())}; only lessonlib: {only_ours[:10]}, only transformers: "
        f"{only_theirs[:10]}; logits of those: {row[only_ours + only_theirs][:10].tolist()}",
        file=sys.stderr,
    )
    sys.exit(1)


def interleaved_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of two calls timed alternately (order flipped each repeat), after warm-up."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for repeat in range(repeats):
        pair = ((0, first), (1, second)) if repeat % 2 == 0 else ((1, second), (0, first))
        for side, fn in pair:
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def time_batch(batch: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median seconds (lessonlib, transformers) for one draw and for the probabilities alone."""
    logits = random_logits(batch, torch.Generator().manual_seed(batch))
    # Same seed on both sides; each side draws from its own generator.
    ours_gen = torch.Generator().manual_seed(0)
    theirs_gen = torch.Generator().manual_seed(0)
    settings = {"temperature": TEMPERATURE, "top_k": TOP_K, "top_p": TOP_P}

    def ours_draw() -> Tensor:
        return sample_next(logits, **settings, generator=ours_gen)

    def theirs_draw() -> Tensor:
        probs = torch.softmax(transformers_warp(logits), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=theirs_gen)

    def ours_probs() -> Tensor:
        return sampling_probs(logits, **settings)

    def theirs_probs() -> Tensor:
        return torch.softmax(transformers_warp(logits), dim=-1)

    return {
        "one draw": interleaved_medians(ours_draw, theirs_draw, repeats),
        "probs, no draw": interleaved_medians(ours_probs, theirs_probs, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed repeats at batch 1")
    parser.add_argument("--check-batches", type=int, default=24, help="batches in the check")
    parser.add_argument("--threads", type=int, default=GENERATION_THREADS, help="torch threads")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio exceeds 1.0")
    args = parser.parse_args()
    if transformers is None:
        print(
            "transformers is not installed; it is a benchmark-only extra. Install it with\n"
            "    .venv/bin/pip install 'transformers>=5.23,<6'\n"
            "(pyproject.toml: the 'bench' extra), then run this script again.",
            file=sys.stderr,
        )
        sys.exit(2)

    with torch.inference_mode(), torch_threads(args.threads):
        summary = check_same_tokens(args.check_batches, seed=2024)
        print(
            f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{args.threads} torch thread(s), load average {os.getloadavg()[0]:.2f}; "
            f"vocabulary {VOCAB_SIZE:,}, temperature {TEMPERATURE}, top-k {TOP_K}, "
            f"top-p {TOP_P}, one draw per row"
        )
        print(summary)
        print()
        print(f"{'batch':>5} {'what':16} {'lessonlib ms':>13} {'transformers ms':>16} {'ratio':>6}")
        ratios = []
        for batch in BATCH_SIZES:
            # Batch 32 costs ~30x batch 1 per call: fewer repeats, but enough for a median.
            rows = time_batch(batch, repeats=max(15, args.repeats // batch))
            for what, (ours, theirs) in rows.items():
                print(
                    f"{batch:5d} {what:16} {ours * 1e3:13.3f} {theirs * 1e3:16.3f} "
                    f"{ours / theirs:6.2f}"
                )
            ours, theirs = rows["one draw"]
            ratios.append(ours / theirs)
    print()
    verdict = "PASS" if max(ratios) <= 1.0 else "FAIL"
    shown = ", ".join(f"batch {b}: {r:.2f}" for b, r in zip(BATCH_SIZES, ratios))
    print(f"lessonlib / transformers, one draw: {shown} (target <= 1.0) {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.check and verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
