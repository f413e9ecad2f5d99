"""`python -m lessonlib.degeneration_lab`: lesson 08's experiment at full size, from the shell."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lessonlib import tinytales
from lessonlib.analysis.degeneration import format_table
from lessonlib.analysis.degeneration_table import (
    BEAM,
    BEAM_FIXED,
    BEAM_WIDTH,
    PAPER_BESIDE,
    PAPER_LEFT_OUT,
    REPEATS,
    STORY_SEED,
    LabRun,
    format_repetition,
    format_results,
    lab_results,
    run_lab,
)
from lessonlib.checkpoint import load_model

# The default sizes take about 3 minutes on the course's 2-core machine: one sampled method
# 6-8 s for 300 prompts, each beam search about 0.5 s per prompt (16 rows each), the measures
# about 17 s; peak memory about 1.0 GB, the KV cache of 300 rows of up to 400 positions. (On a
# busy machine OMP_WAIT_POLICY=PASSIVE stops torch's threads spinning while they wait: up to
# 15 times faster here, and no result changes.)
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


# The whole-number options: flag, default, help.
_SIZES = (
    ("--samples", DEFAULT_SAMPLES, "prompts, so generations per method"),
    (
        "--beam-prompts",
        DEFAULT_BEAM_PROMPTS,
        f"prompts that beam search continues (it costs {BEAM_WIDTH} rows per prompt)",
    ),
    ("--max-new-tokens", DEFAULT_MAX_NEW_TOKENS, "length cap of every continuation, in characters"),
    (
        "--prompt-chars",
        DEFAULT_PROMPT_CHARS,
        "characters of each held-out story given as the prompt",
    ),
    (
        "--seed",
        STORY_SEED,
        "seed of the held-out stories (another seed: another replicate of the experiment)",
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lessonlib.degeneration_lab",
        description="Lesson 08's degeneration table (Holtzman et al. 2020, Table 1) with more "
        "generations per method than the notebook can afford.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for flag, default, text in _SIZES:
        parser.add_argument(flag, type=int, default=default, help=text)
    parser.add_argument(
        "--write",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the results as JSON to PATH (the notebook reads "
        "data/degeneration_lab_results.json, made with the default sizes)",
    )
    return parser


def _print_results(run: LabRun, results: dict, max_new_tokens: int) -> None:
    """The run's timings, its table with standard errors, the paper beside it, the repetitions."""
    print("\ngeneration time per method:")
    for method, seconds in run.timings.items():
        print(f"  {method:<16}{seconds:>7.1f} s")
    print(f"scoring and measuring: {run.measure_seconds:.1f} s\n")
    print(format_results(results))
    print(
        f"\n{BEAM_FIXED}: beam search with the end forbidden, exactly {max_new_tokens} "
        "characters. Self-BLEU4's error treats the generations' scores as independent; Zipf's is "
        "a jackknife over generations. Self-BLEU4 and Zipf depend on how many texts there are, so "
        "the beam rows, from fewer texts, are not comparable with the others on them."
    )
    print(
        f"{BEAM_FIXED}: {results['fixed_beam_ends_on_ending']} of {len(run.fixed_beams)} texts "
        "end on an ending sentence, though they may not end the story.\n"
    )
    print("beside Holtzman et al. 2020, Table 1 (the paper's own settings: k of 50,257 tokens):")
    print(format_table(list(run.rows.values()), paper=PAPER_BESIDE))
    print("the paper's rows and columns left out: " + "; ".join(
        f"{label} ({why})" for label, why in PAPER_LEFT_OUT.items()
    ))  # fmt: skip
    print(
        f"\nthe hero's stock sentence said {REPEATS} times after the frame of each story: the "
        "probability of each saying,\nunder the model and the grammar (Holtzman et al.: it grows "
        "with each repetition in GPT-2):"
    )
    print(format_repetition(results))


def main(argv: list[str] | None = None) -> None:
    """Command line: run the experiment at the chosen size and print sizes, timings and tables."""
    parser = _parser()
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
    results = lab_results(run)
    _print_results(run, results, args.max_new_tokens)
    if args.write is not None:
        args.write.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.write}")
    print(f"\ntotal: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
