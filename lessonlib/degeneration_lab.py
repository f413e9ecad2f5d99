"""Lesson 08's experiment, Table 1 of Holtzman et al. 2020 on the course GPT, at any size.

The experiment's definition (the decoding methods, their settings and generator seeds, the
held-out prompts, the paper's values) and the steps that turn generations into table rows live
here, so the notebook and the command below run the same code. The notebook keeps to a few dozen
generations per method to stay fast; the command runs a few hundred:

    python -m lessonlib.degeneration_lab [--samples N] [--beam-prompts M] [--max-new-tokens T]
        [--prompt-chars P] [--seed S]

The measures themselves are in `lessonlib.degeneration`; this module only orchestrates them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from tqdm.auto import tqdm

from lessonlib import tinytales
from lessonlib.beam_search import BeamSearchResult, beam_search_many
from lessonlib.checkpoint import load_model
from lessonlib.degeneration import (
    DegenerationRow,
    continuation_log_probs,
    format_share_errors,
    format_table,
    generation_log_probs,
    measure_decoding,
    nats_per_token,
    tokens_per_text,
)
from lessonlib.generation import Generation, LanguageModel, generate
from lessonlib.tokenizer import CharTokenizer

__all__ = [
    "BEAM",
    "BEAM_CHUNK",
    "BEAM_WIDTH",
    "ORDER",
    "PAPER",
    "SEEDS",
    "SETTINGS",
    "STORY_SEED",
    "TOP_K",
    "LabRun",
    "decoding_outputs",
    "held_out_stories",
    "main",
    "measure_methods",
    "nats_per_method",
    "run_beam_search",
    "run_lab",
    "sample_method",
]

TOP_K = 3  # our k for top-k: the cut that bites where a story makes a choice (lesson 08, sec. 3)
BEAM_WIDTH = 16
BEAM = f"beam b={BEAM_WIDTH}"
# The training stories use seed 0 and the validation stories seed 1: these were never seen.
STORY_SEED = 2020

# Holtzman et al. 2020, Table 1: GPT-2 Large, 5,000 generations per method. The keys are our
# row names; the paper's two top-k rows used k = 40 (of 50,257 tokens), not our k.
PAPER: dict[str, dict[str, float]] = {
    "human": {"perplexity": 12.38, "self_bleu": 0.31, "zipf": 0.93, "repetition": 0.28},
    "greedy": {"perplexity": 1.50, "self_bleu": 0.50, "zipf": 1.00, "repetition": 73.66},
    BEAM: {"perplexity": 1.48, "self_bleu": 0.44, "zipf": 0.94, "repetition": 28.94},
    "pure sampling": {"perplexity": 22.73, "self_bleu": 0.28, "zipf": 0.93, "repetition": 0.22},
    "sampling t=0.9": {"perplexity": 10.25, "self_bleu": 0.35, "zipf": 0.96, "repetition": 0.66},
    f"top-k={TOP_K}": {"perplexity": 6.88, "self_bleu": 0.39, "zipf": 0.96, "repetition": 0.78},
    f"top-k={TOP_K} t=0.7": {
        "perplexity": 3.48,
        "self_bleu": 0.44,
        "zipf": 1.00,
        "repetition": 8.86,
    },
    "nucleus p=0.95": {"perplexity": 13.13, "self_bleu": 0.32, "zipf": 0.95, "repetition": 0.36},
}

# The sampler settings of each sampled method, in `generate`'s keyword names.
SETTINGS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "pure sampling": {"temperature": 1.0},
    "sampling t=0.9": {"temperature": 0.9},
    "sampling t=0.7": {"temperature": 0.7},
    f"top-k={TOP_K}": {"top_k": TOP_K},
    f"top-k={TOP_K} t=0.7": {"top_k": TOP_K, "temperature": 0.7},
    "nucleus p=0.95": {"top_p": 0.95},
}

# One torch.Generator seed per method. The notebook samples pure sampling first (seed 1, for
# section 3) and then the others in SETTINGS order from seed 2; these are those seeds, so any
# order of sampling reproduces its texts.
SEEDS: dict[str, int] = {
    "greedy": 2,
    "pure sampling": 1,
    "sampling t=0.9": 4,
    "sampling t=0.7": 5,
    f"top-k={TOP_K}": 6,
    f"top-k={TOP_K} t=0.7": 7,
    "nucleus p=0.95": 8,
}

# The table's rows, top to bottom: the reference, the two searches, then the sampling rules.
ORDER: list[str] = ["human", "greedy", BEAM, "pure sampling", "sampling t=0.9", "sampling t=0.7"]
ORDER += [f"top-k={TOP_K}", f"top-k={TOP_K} t=0.7", "nucleus p=0.95"]


def held_out_stories(
    samples: int, prompt_chars: int, *, seed: int = STORY_SEED
) -> tuple[list[str], list[str]]:
    """Prompts (each story's first `prompt_chars` characters) and the human rest of each story."""
    stories = tinytales.generate_stories(samples, seed=seed)
    return [story[:prompt_chars] for story in stories], [story[prompt_chars:] for story in stories]


def sample_method(
    model: LanguageModel,
    prompts: list[str],
    method: str,
    *,
    tokenizer: CharTokenizer,
    max_new_tokens: int,
) -> Generation:
    """One sampled method's continuation of every prompt: one batched call, the method's seed."""
    generator = torch.Generator().manual_seed(SEEDS[method])
    return generate(
        model, prompts, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
        generator=generator, record_logits=True, **SETTINGS[method],
    )  # fmt: skip


# Prompts per beam_search_many call. One call holds BEAM_WIDTH cache rows per prompt until its
# slowest prompt stops, so 100 prompts in one call would hold 1,600 rows (about 3.3 GB of cache
# at 400 positions) and compute the rows of finished prompts; 8 prompts hold 128 rows.
BEAM_CHUNK = 8


def run_beam_search(
    model: LanguageModel,
    prompts: list[str],
    *,
    tokenizer: CharTokenizer,
    max_new_tokens: int,
    length_penalty: float = 0.0,
) -> list[BeamSearchResult]:
    """Beam search of width BEAM_WIDTH for every prompt, BEAM_CHUNK prompts per batch."""
    results: list[BeamSearchResult] = []
    for first in range(0, len(prompts), BEAM_CHUNK):
        results += beam_search_many(
            model, prompts[first : first + BEAM_CHUNK], tokenizer=tokenizer,
            beam_width=BEAM_WIDTH, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
            record_steps=False,
        )  # fmt: skip
    return results


def decoding_outputs(
    model: LanguageModel,
    prompts: list[str],
    human: list[str],
    generations: Mapping[str, Generation],
    beams: Sequence[BeamSearchResult],
    *,
    tokenizer: CharTokenizer,
) -> dict[str, dict[str, list]]:
    """`measure_decoding`'s arguments per method: human text, each sampled method, beam search.

    Log-probabilities are the model's own, at temperature 1: recorded while sampling, reported
    by beam search, and one batched forward pass for the human text. Beam search continued the
    first len(beams) prompts.
    """
    done = [True] * len(human)
    human_scores = continuation_log_probs(model, prompts, human, tokenizer=tokenizer, finished=done)
    outputs = {
        "human": {
            "prompts": prompts,
            "texts": human,
            "finished": done,
            "log_probs": [float(score.sum()) for score in human_scores],
        }
    }
    for method, generation in generations.items():
        outputs[method] = {
            "prompts": prompts,
            "texts": generation.texts,
            "finished": generation.finished,
            "log_probs": [float(score.sum()) for score in generation_log_probs(generation)],
        }
    best = [beam.best for beam in beams]
    outputs[BEAM] = {
        "prompts": prompts[: len(best)],
        "texts": [hypothesis.text for hypothesis in best],
        "finished": [hypothesis.finished for hypothesis in best],
        "log_probs": [hypothesis.log_prob for hypothesis in best],
    }
    return outputs


def measure_methods(outputs: Mapping[str, Mapping[str, list]]) -> dict[str, DegenerationRow]:
    """Each method's table row (`measure_decoding`), in ORDER."""
    return {method: measure_decoding(method, **outputs[method]) for method in ORDER}


def nats_per_method(outputs: Mapping[str, Mapping[str, list]]) -> dict[str, tuple[float, float]]:
    """Each method's nats per character under the model and its standard error, in ORDER.

    The log of the table's perplexity: near 1 a perplexity hides differences this scale shows.
    A finished generation's end marker counts as a token, as in the perplexity.
    """
    nats = {}
    for method in ORDER:
        out = outputs[method]
        nats[method] = nats_per_token(
            out["log_probs"], tokens_per_text(out["texts"], out["finished"])
        )
    return nats


@dataclass(frozen=True)
class LabRun:
    """One run of the experiment: what was generated, how long it took, and the table's rows."""

    prompts: list[str]
    human: list[str]
    generations: dict[str, Generation]
    beams: list[BeamSearchResult]
    timings: dict[str, float]  # seconds of generation per method (beam search included)
    measure_seconds: float  # scoring the human text and computing every row
    outputs: dict[str, dict[str, list]]  # `decoding_outputs`: texts and log-probs per method
    rows: dict[str, DegenerationRow]


def run_lab(
    model: LanguageModel,
    tokenizer: CharTokenizer,
    *,
    samples: int,
    beam_prompts: int,
    max_new_tokens: int,
    prompt_chars: int,
    seed: int = STORY_SEED,
    progress: bool = False,
) -> LabRun:
    """The notebook's experiment at the given size: every method on every prompt, then the rows."""
    prompts, human = held_out_stories(samples, prompt_chars, seed=seed)
    sample = partial(
        sample_method, model, prompts, tokenizer=tokenizer, max_new_tokens=max_new_tokens
    )
    work = {method: partial(sample, method) for method in SETTINGS}
    work[BEAM] = partial(
        run_beam_search, model, prompts[:beam_prompts], tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    results, timings = {}, {}
    # Without a terminal (a log, a test) the bar is off: disable=None asks tqdm to check.
    bar = tqdm(work, desc="generating", leave=False, disable=None if progress else True)
    for method in bar:
        bar.set_postfix_str(method)
        start = time.perf_counter()
        results[method] = work[method]()
        timings[method] = time.perf_counter() - start
    beams = results.pop(BEAM)
    start = time.perf_counter()
    outputs = decoding_outputs(model, prompts, human, results, beams, tokenizer=tokenizer)
    rows = measure_methods(outputs)
    seconds = time.perf_counter() - start
    return LabRun(prompts, human, results, beams, timings, seconds, outputs, rows)


# Sizes of the default command: about 90 s on the course's 2-core machine, where one sampled
# method costs 5-7 s for 300 prompts, beam search about 0.4 s per prompt (16 rows each) and the
# measures 7 s. Peak memory about 1.1 GB: the KV cache of 300 rows of up to 400 positions.
DEFAULT_SAMPLES = 300
DEFAULT_BEAM_PROMPTS = 100
DEFAULT_MAX_NEW_TOKENS = 240
DEFAULT_PROMPT_CHARS = 160
MIN_NEW_TOKENS = 20  # shorter continuations can leave a method fewer than 2 words to fit Zipf to


def _check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace, block: int) -> None:
    """Exit through `parser.error` naming the first argument out of range, and what is accepted."""
    if args.samples < 2:
        parser.error(f"--samples must be >= 2 (Self-BLEU needs two texts), got {args.samples}")
    if not 2 <= args.beam_prompts <= args.samples:
        parser.error(
            f"--beam-prompts must be in 2..{args.samples} (at least two texts for Self-BLEU, at "
            f"most --samples), got {args.beam_prompts}"
        )
    if not MIN_NEW_TOKENS <= args.max_new_tokens <= block - 2:  # room for a 1-character prompt
        parser.error(
            f"--max-new-tokens must be in {MIN_NEW_TOKENS}..{block - 2}, got {args.max_new_tokens}"
        )
    if args.seed in (0, 1):
        parser.error(
            f"--seed must not be 0 or 1 (the training and validation stories), got {args.seed}"
        )
    stories = tinytales.generate_stories(args.samples, seed=args.seed)
    # Every generation must fit in the model's context (start marker + prompt + new tokens).
    longest_prompt = min(min(len(story) for story in stories) - 1, block - 1 - args.max_new_tokens)
    if not 1 <= args.prompt_chars <= longest_prompt:
        parser.error(
            f"--prompt-chars must be in 1..{longest_prompt} (a prompt leaves every story a "
            f"continuation and fits the model's context of {block} tokens with "
            f"--max-new-tokens {args.max_new_tokens}), got {args.prompt_chars}"
        )
    # The human continuations are scored in one pass each: a whole story and its end must fit.
    for index, story in enumerate(stories):
        if len(story) + 1 > block:
            parser.error(
                f"--samples must be <= {index} with --seed {args.seed}: held-out story {index} "
                f"has {len(story)} characters, too long for the model's context of {block} "
                f"tokens, got {args.samples}"
            )


def main(argv: list[str] | None = None) -> None:
    """Command line: run the experiment at the chosen size and print sizes, timings and tables."""
    parser = argparse.ArgumentParser(
        prog="python -m lessonlib.degeneration_lab",
        description="Lesson 08's degeneration table (Holtzman et al. 2020, Table 1) with more "
        "generations per method than the notebook can afford.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="prompts, so generations per method"
    )
    parser.add_argument(
        "--beam-prompts",
        type=int,
        default=DEFAULT_BEAM_PROMPTS,
        help=f"prompts that beam search continues (it costs {BEAM_WIDTH} rows per prompt)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help="length cap of every continuation, in characters",
    )
    parser.add_argument(
        "--prompt-chars",
        type=int,
        default=DEFAULT_PROMPT_CHARS,
        help="characters of each held-out story given as the prompt",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=STORY_SEED,
        help="seed of the held-out stories (another seed: another replicate of the experiment)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model, tokenizer = load_model()
    _check_sizes(parser, args, model.block_size)
    print(
        f"{args.samples} held-out TinyTales stories (seed {args.seed}); prompts of "
        f"{args.prompt_chars} characters, continuations of at most {args.max_new_tokens}"
    )
    print(
        f"generations per method: {args.samples} ({BEAM}: the first {args.beam_prompts} "
        f"prompts, {BEAM_WIDTH * args.beam_prompts} rows)"
    )
    run = run_lab(
        model,
        tokenizer,
        samples=args.samples,
        beam_prompts=args.beam_prompts,
        max_new_tokens=args.max_new_tokens,
        prompt_chars=args.prompt_chars,
        seed=args.seed,
        progress=True,
    )
    print("\ngeneration time per method:")
    for method, seconds in run.timings.items():
        print(f"  {method:<16}{seconds:>7.1f} s")
    print(f"scoring and measuring: {run.measure_seconds:.1f} s\n")
    rows = list(run.rows.values())
    print(format_table(rows, paper=PAPER))
    print()
    print(format_share_errors(rows))
    print("\nlog-probability under the model, nats per character (the log of ppl), +- s.e.:")
    nats = nats_per_method(run.outputs)
    for method, (value, error) in nats.items():
        print(f"  {method:<16}{value:.4f} +- {error:.4f}  ({value / nats['human'][0]:.2f} x human)")
    print(
        "Self-BLEU4, Zipf, dist-4 and true nats/ch pool all of a method's text and have no "
        "simple standard error;\nrerun with another --seed to see how much they move. Self-BLEU4 "
        f"depends on how many texts there are,\nso {BEAM}'s, from fewer texts, is not comparable "
        "with the other rows'."
    )
    print(f"\ntotal: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
