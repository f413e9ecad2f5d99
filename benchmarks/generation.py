"""Generation speed of the shipped model: cached vs uncached decoding, measured side by side.

Prints a table and the ratios the course's targets are stated in:
- a cached greedy step costs at most 1.3x one bare forward pass over a single token;
- with the cache, 240 new tokens from a 16-character prompt are at least 5x faster than
  recomputing the whole context at every step.
Each timing is the median of several repeats, interleaved so that machine noise hits both
sides alike. Run: .venv/bin/python benchmarks/generation.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lessonlib.analysis.flops import generation_flops
from lessonlib.checkpoint import load_model
from lessonlib.generation import generate
from lessonlib.threads import GENERATION_THREADS, decoding_threads, torch_threads

PROMPT = "Once upon a time"  # 16 characters
NEW_TOKENS = 240


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each function, timed in turn within every repeat, after a warm-up."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    # One call of each per round, so that a slow spell of the machine hits all of them alike
    # instead of whichever happened to be timed then.
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    args = parser.parse_args()
    model, tokenizer = load_model()
    assert len(PROMPT) == 16

    def greedy(batch: int, use_cache: bool) -> Callable[[], object]:
        return lambda: generate(
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

    batch_1 = {"bare": bare_forwards, "cached": greedy(1, True), "uncached": greedy(1, False)}
    medians = interleaved_medians(batch_1, args.repeats)
    forward = medians["bare"] / NEW_TOKENS
    cached, uncached = medians["cached"], medians["uncached"]
    batch_256 = interleaved_medians({"b256": greedy(256, True)}, max(1, args.repeats // 2))["b256"]

    cached_step = cached / NEW_TOKENS
    counted = [
        generation_flops(
            model.config, prompt_length=len(PROMPT) + 1, max_new_tokens=NEW_TOKENS, use_cache=cache
        ).total
        for cache in (False, True)
    ]
    rows = [
        ("bare forward, 1 token", forward * 1e3, 1 / forward),
        ("cached greedy, batch 1", cached_step * 1e3, NEW_TOKENS / cached),
        ("uncached greedy, batch 1", uncached / NEW_TOKENS * 1e3, NEW_TOKENS / uncached),
        ("cached greedy, batch 256", batch_256 / NEW_TOKENS * 1e3, 256 * NEW_TOKENS / batch_256),
    ]
    print(
        f"torch {torch.__version__}; decoding threads: {decoding_threads(1)} at batch 1, "
        f"{decoding_threads(256)} at batch 256; "
        f"{NEW_TOKENS} new tokens after a {len(PROMPT)}-character prompt"
    )
    print(f"{'measurement':28} {'ms per step':>12} {'tokens/s':>10}")
    for name, ms, rate in rows:
        print(f"{name:28} {ms:12.3f} {rate:10.0f}")
    print()
    print(f"cached step / bare one-token forward: {cached_step / forward:.2f}x (target <= 1.3)")
    print(f"uncached / cached time:              {uncached / cached:.2f}x (target >= 5)")
    print(f"uncached / cached counted FLOPs:      {counted[0] / counted[1]:.2f}x")


if __name__ == "__main__":
    main()
