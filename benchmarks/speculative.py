"""Speculative decoding on this machine: plain and speculative sampling timed side by side.

For the shipped target and each draft (the 1-layer GPT, a character 3-gram) and k in 2, 4, 6:
the time per generated token of plain `generate` and of `speculative_generate` (the same budget,
seeded alike), their ratio (the speed-up), the acceptance rate, target passes per token and the
counted FLOPs of speculation over plain decoding, beside one bare one-token forward pass of the
target. Plain and speculative runs alternate within every repeat; times are medians. There is
no target: the lesson states the speed-up, whatever it is.
Run: .venv/bin/python benchmarks/speculative.py [--repeats 5] [--tokens 200]
"""

from __future__ import annotations

import argparse
import os

import torch
from timing import interleaved_medians  # benchmarks/timing.py, beside this script

from lessonlib.analysis.speculation import counted_work
from lessonlib.checkpoint import DRAFT_CHECKPOINT_NAME, load_model
from lessonlib.generation import generate
from lessonlib.ngram import training_ngram
from lessonlib.speculative import speculative_generate
from lessonlib.threads import GENERATION_THREADS, torch_threads

PROMPT = "Once upon a time, there was a "


def row(target, draft, tokenizer, *, name: str, k: int, tokens: int, repeats: int) -> str:
    """One table row: plain and speculative generation of `tokens` tokens, timed in turn."""

    def plain() -> object:
        generator = torch.Generator().manual_seed(0)
        return generate(
            target, PROMPT, tokenizer=tokenizer, max_new_tokens=tokens, generator=generator
        )

    def speculative() -> object:
        generator = torch.Generator().manual_seed(0)
        return speculative_generate(
            target, draft, PROMPT, tokenizer=tokenizer, k=k, max_new_tokens=tokens,
            generator=generator,
        )  # fmt: skip

    times = interleaved_medians({"plain": plain, "spec": speculative}, repeats)
    plain_per_token = times["plain"] / len(plain().token_ids[0])
    spec = speculative()
    spec_per_token = times["spec"] / len(spec.token_ids[0])
    flops = "n/a (n-gram)"
    if hasattr(draft, "config"):  # an n-gram has no forward FLOPs to count
        work = counted_work(
            spec, target=target.config, draft=draft.config, prompt_length=len(PROMPT) + 1
        )
        flops = f"{(work['target'].total + work['draft'].total) / work['plain'].total:.2f}"
    return (
        f"{name:<10} {k:2d}  {1000 * plain_per_token:14.3f}  {1000 * spec_per_token:13.3f}  "
        f"{plain_per_token / spec_per_token:7.2f}x  {spec.acceptance_rate:10.3f}  "
        f"{spec.target_passes / len(spec.token_ids[0]):12.3f}  {flops:>16}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200, help="new tokens per generation")
    args = parser.parse_args()
    target, tokenizer = load_model()
    drafts = {
        "GPT draft": load_model(name=DRAFT_CHECKPOINT_NAME)[0],
        "3-gram": training_ngram(order=3, stories=2000)[0],
    }
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with torch.inference_mode(), torch_threads(GENERATION_THREADS):
        one = torch.zeros(1, 1, dtype=torch.long)
        bare = interleaved_medians({"bare": lambda: target(one)}, 50)["bare"]
        print(f"bare one-token forward of the target: {1000 * bare:.3f} ms")
        print(
            "draft       k  plain ms/token  spec ms/token  speed-up  acceptance  passes/token"
            "  FLOPs spec/plain"
        )
        for name, draft in drafts.items():
            for k in (2, 4, 6):
                print(row(target, draft, tokenizer, name=name, k=k, tokens=args.tokens,
                          repeats=args.repeats))  # fmt: skip
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
