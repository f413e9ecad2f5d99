"""Sampler speed: lessonlib's `sample_next` against Hugging Face transformers' logits warpers.

Both sides turn logits into one drawn token per row with temperature 0.8, top-p 0.9 and top-k
(10 of the course's 50 characters; 50 of GPT-2's 50,257 tokens), at batch 1 and 32:
- lessonlib: `lessonlib.sampling.sample_next`, validation included;
- transformers: TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper in that order,
  then softmax and `torch.multinomial`, as `generate(do_sample=True)` does (called directly:
  LogitsProcessorList's per-call signature inspection has nothing to do with sampling).
`--baseline DIR` also times the `sample_next` of another checkout in the same rounds.

First it checks that both keep exactly the same tokens on the same random rows. That is the
target: the script exits 1 naming the first row that differs (why the two top-p conventions
agree, and where floating point lets them differ: benchmarks/README.md). Then it times them:
medians of repeats, interleaved so that machine noise hits every side alike, on the thread count
of lessonlib's generation loop. Speed is reported without a target (see benchmarks/README.md).
Run from the repository root:
    .venv/bin/pip install 'transformers>=5.23,<6'    # benchmark-only, not a course dependency
    .venv/bin/python benchmarks/sampler.py [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import torch
from generation import baseline_module  # benchmarks/generation.py, beside this script
from timing import interleaved_medians  # benchmarks/timing.py, beside this script
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

COURSE_VOCAB = 50  # the shipped model's characters
VOCABS = {COURSE_VOCAB: 10, 50_257: 50}  # vocabulary size -> top-k (GPT-2's size, as in the paper)
TEMPERATURE = 0.8
TOP_P = 0.9
BATCH_SIZES = (1, 32)
# A prefix mass this close to p is a floating-point boundary case (see the README).
BOUNDARY = 1e-6


def random_logits(
    batch: int, vocab: int, generator: torch.Generator, *, grid: bool = False
) -> Tensor:
    """float32 logits, one spread per row from flat (top-p keeps all k) to peaked (it keeps 1)."""
    scales = torch.empty(batch, 1).uniform_(0.5, 8.0, generator=generator)
    logits = torch.randn(batch, vocab, generator=generator) * scales
    # Quarter-integer values tie often, also across the top-p cut.
    return torch.round(logits * 4) / 4 if grid else logits


def lessonlib_kept(logits: Tensor, k: int) -> Tensor:
    """Tokens lessonlib keeps: finite after its public filters, checked against the pipeline."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    filtered = filter_top_p(filter_top_k(apply_temperature(shifted, TEMPERATURE), k), TOP_P)
    kept = torch.isfinite(filtered)
    probs = sampling_probs(logits, temperature=TEMPERATURE, top_k=k, top_p=TOP_P)
    if not torch.equal(probs > 0, kept):
        sys.exit("check failed: sampling_probs gives probability to other tokens than the filters")
    return kept


def transformers_warp(logits: Tensor, k: int) -> Tensor:
    """Scores after transformers' temperature, top-k and top-p warpers, in that order."""
    input_ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)  # unused by these warpers
    warpers = (
        TemperatureLogitsWarper(TEMPERATURE),
        TopKLogitsWarper(top_k=k, min_tokens_to_keep=1),
        TopPLogitsWarper(top_p=TOP_P, min_tokens_to_keep=1),
    )
    scores = logits
    for warper in warpers:
        scores = warper(input_ids, scores)
    return scores


def near_boundary(logits: Tensor, k: int) -> Tensor:
    """Rows with a top-p prefix mass within BOUNDARY of p, computed in float64."""
    tempered = logits.double() / TEMPERATURE
    kth = torch.topk(tempered, k, dim=-1).values[:, -1:]
    survivors = tempered.masked_fill(tempered < kth, float("-inf"))
    masses = torch.softmax(survivors.sort(dim=-1, descending=True).values, dim=-1).cumsum(dim=-1)
    return ((masses - TOP_P).abs() < BOUNDARY).any(dim=-1)


def check_same_tokens(vocab: int, batches: int, seed: int) -> str:
    """Compare kept sets row by row; exit 1 naming the first differing row, else a summary."""
    k = VOCABS[vocab]
    generator = torch.Generator().manual_seed(seed)
    exact = boundary = tied = tied_same_ids = 0
    for index in range(batches):
        batch = BATCH_SIZES[index % len(BATCH_SIZES)]
        for grid in (False, True):
            logits = random_logits(batch, vocab, generator, grid=grid)
            ours, theirs = lessonlib_kept(logits, k), torch.isfinite(transformers_warp(logits, k))
            edge = near_boundary(logits, k)
            for row in range(batch):
                same = torch.equal(ours[row], theirs[row])
                if edge[row]:
                    boundary += 1
                elif not grid:
                    exact += 1
                    if not same:
                        fail(logits[row], ours[row], theirs[row], "continuous")
                else:
                    # Ties across the cut: same count and same kept values, ids may differ.
                    tied += 1
                    tied_same_ids += same
                    ours_values = logits[row][ours[row]].sort().values
                    if not torch.equal(ours_values, logits[row][theirs[row]].sort().values):
                        fail(logits[row], ours[row], theirs[row], "quarter-integer")
    return (
        f"V={vocab:,}, k={k}: same kept tokens on all {exact} continuous rows; same kept count "
        f"and values on all {tied} quarter-integer rows ({tied_same_ids} also the same ids); "
        f"{boundary} rows within {BOUNDARY:g} of the top-p boundary left out"
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


def time_case(vocab: int, batch: int, repeats: int, baseline: Callable | None) -> dict[str, float]:
    """Median seconds of one draw per row for each sampler, on the same logits."""
    k = VOCABS[vocab]
    logits = random_logits(batch, vocab, torch.Generator().manual_seed(batch))
    settings = {"temperature": TEMPERATURE, "top_k": k, "top_p": TOP_P}
    # Same seed on every side; each side draws from its own generator.
    generators = {name: torch.Generator().manual_seed(0) for name in ("ours", "base", "theirs")}

    def theirs() -> Tensor:
        probs = torch.softmax(transformers_warp(logits, k), dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generators["theirs"])

    fns = {
        "lessonlib": lambda: sample_next(logits, **settings, generator=generators["ours"]),
        "transformers": theirs,
    }
    if baseline is not None:
        fns["baseline"] = lambda: baseline(logits, **settings, generator=generators["base"])
    return interleaved_medians(fns, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed repeats at batch 1")
    parser.add_argument("--check-batches", type=int, default=24, help="batches in the check")
    parser.add_argument("--threads", type=int, default=GENERATION_THREADS, help="torch threads")
    parser.add_argument("--baseline", help="another checkout whose sample_next is timed too")
    args = parser.parse_args()
    if transformers is None:
        print(
            "transformers is not installed; it is a benchmark-only extra. Install it with\n"
            "    .venv/bin/pip install 'transformers>=5.23,<6'\n"
            "(pyproject.toml: the 'bench' extra), then run this script again.",
            file=sys.stderr,
        )
        sys.exit(2)
    baseline = None
    if args.baseline:
        module = baseline_module(args.baseline, "lessonlib.sampling")
        print(f"baseline: {module.__file__}")
        baseline = module.sample_next

    with torch.inference_mode(), torch_threads(args.threads):
        summaries = [check_same_tokens(vocab, args.check_batches, seed=2024) for vocab in VOCABS]
        print(
            f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{args.threads} torch thread(s), load average {os.getloadavg()[0]:.2f}; "
            f"temperature {TEMPERATURE}, top-p {TOP_P}, one draw per row"
        )
        print("\n".join(summaries))
        print()
        header = f"{'V':>6} {'k':>2} {'batch':>5} {'lessonlib ms':>12} {'transformers ms':>15}"
        print(header + f" {'ratio':>6}" + (" baseline ms  base/lessonlib" if baseline else ""))
        ratios = {}
        for vocab, k in VOCABS.items():
            for batch in BATCH_SIZES:
                # A call over 50,257 tokens costs ~30x more per row: fewer repeats, enough for
                # a median.
                big = vocab != COURSE_VOCAB
                repeats = max(15, args.repeats // batch) if big else args.repeats
                times = time_case(vocab, batch, repeats, baseline)
                ratio = times["lessonlib"] / times["transformers"]
                ratios[vocab, batch] = ratio
                line = (
                    f"{vocab:6d} {k:2d} {batch:5d} {times['lessonlib'] * 1e3:12.4f} "
                    f"{times['transformers'] * 1e3:15.4f} {ratio:6.2f}"
                )
                if baseline:
                    base = times["baseline"]
                    line += f" {base * 1e3:11.4f} {base / times['lessonlib']:15.2f}"
                print(line)
    print()
    for vocab in VOCABS:
        shown = ", ".join(f"batch {b}: {ratios[vocab, b]:.2f}x" for b in BATCH_SIZES)
        print(f"lessonlib / transformers time at V={vocab:,}: {shown}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
