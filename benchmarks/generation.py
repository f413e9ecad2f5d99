"""Generation speed of the shipped model: cached vs uncached decoding, measured side by side.

Prints a table and the ratios the course's targets are stated in:
- a cached greedy step costs at most 1.3x one bare forward pass over a single token;
- with the cache, 240 new tokens from a 16-character prompt are at least 5x faster than
  recomputing the whole context at every step.
Each timing is the median of several repeats, interleaved so that machine noise hits every
measurement alike. `--baseline DIR` also times `generate` from another checkout (for example
`git worktree add /tmp/base HEAD`) in the same rounds, to compare a change with what it replaces.
Run: .venv/bin/python benchmarks/generation.py [--repeats 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from timing import interleaved_medians  # benchmarks/timing.py, beside this script

from lessonlib.analysis.flops import generation_flops
from lessonlib.checkpoint import load_model
from lessonlib.generation import generate
from lessonlib.threads import GENERATION_THREADS, decoding_threads, torch_threads

PROMPT = "Once upon a time"  # 16 characters
NEW_TOKENS = 240


def baseline_module(directory: str, name: str) -> ModuleType:
    """Module `name` of the lessonlib in `directory`, imported beside this checkout's lessonlib."""
    ours = {key: module for key, module in sys.modules.items() if key.startswith("lessonlib")}
    for key in ours:
        del sys.modules[key]
    sys.path.insert(0, str(Path(directory).resolve()))
    try:
        # The baseline's functions keep their own module globals once imported.
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
        for key in [key for key in sys.modules if key.startswith("lessonlib")]:
            del sys.modules[key]
        sys.modules.update(ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--baseline", help="another checkout whose generate is timed alongside")
    args = parser.parse_args()
    model, tokenizer = load_model()
    assert len(PROMPT) == 16
    versions = {"": generate}
    if args.baseline:
        baseline = baseline_module(args.baseline, "lessonlib.generation")
        print(f"baseline: {baseline.__file__}")
        versions["baseline "] = baseline.generate

    def greedy(batch: int, use_cache: bool, label: str = "") -> Callable[[], object]:
        return lambda: versions[label](
            model,
            [PROMPT] * batch,
            tokenizer=tokenizer,
            max_new_tokens=NEW_TOKENS,
            temperature=0.0,
            use_cache=use_cache,
            stop_at_boundary=False,
        )

    one_token = torch.tensor([[tokenizer.boundary_id]])

    def bare_forwards() -> None:
        # As many back-to-back calls as a generation has steps, timed together like one, so
        # that both sides see the same kind of noise (a median of single calls would drop
        # every slow call and flatter the floor).
        with torch.inference_mode(), torch_threads(GENERATION_THREADS):
            for _ in range(NEW_TOKENS):
                model(one_token)

    batch_1 = {"bare": bare_forwards}
    for label in versions:
        batch_1[f"{label}cached"] = greedy(1, True, label)
        batch_1[f"{label}uncached"] = greedy(1, False, label)
    medians = interleaved_medians(batch_1, args.repeats)
    large = {f"{label}b256": greedy(256, True, label) for label in versions}
    medians.update(interleaved_medians(large, max(1, args.repeats // 2)))
    forward = medians["bare"] / NEW_TOKENS
    counted = [
        generation_flops(
            model.config, prompt_length=len(PROMPT) + 1, max_new_tokens=NEW_TOKENS, use_cache=cache
        ).total
        for cache in (False, True)
    ]
    print(
        f"torch {torch.__version__}; decoding threads: {decoding_threads(1)} at batch 1, "
        f"{decoding_threads(256)} at batch 256; "
        f"{NEW_TOKENS} new tokens after a {len(PROMPT)}-character prompt"
    )
    print(f"{'measurement':37} {'ms per step':>12} {'tokens/s':>10}")
    print(f"{'bare forward, 1 token':37} {forward * 1e3:12.3f} {1 / forward:10.0f}")
    for label in versions:
        for name, key, rows in (
            ("cached greedy, batch 1", "cached", 1),
            ("uncached greedy, batch 1", "uncached", 1),
            ("cached greedy, batch 256", "b256", 256),
        ):
            seconds = medians[label + key]
            rate = rows * NEW_TOKENS / seconds
            print(f"{label + name:37} {seconds / NEW_TOKENS * 1e3:12.3f} {rate:10.0f}")
    for label in versions:
        cached, uncached = medians[f"{label}cached"], medians[f"{label}uncached"]
        print()
        step = cached / NEW_TOKENS / forward
        print(f"{label}cached step / bare one-token forward: {step:.2f}x (target <= 1.3)")
        print(f"{label}uncached / cached time:              {uncached / cached:.2f}x (target >= 5)")
    print(f"uncached / cached counted FLOPs:      {counted[0] / counted[1]:.2f}x")
    if args.baseline:
        print()
        for key in ("cached", "uncached", "b256"):
            ratio = medians[key] / medians[f"baseline {key}"]
            print(f"this checkout / baseline, {key:8}: {ratio:.3f}x time (within 10%: <= 1.10)")


if __name__ == "__main__":
    main()
