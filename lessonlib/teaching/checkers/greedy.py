"""The greedy-loop exercise: a learner's whole decoding loop against `generate` at temperature 0."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lessonlib.generation import LanguageModel, generate
from lessonlib.teaching.checkers.engine import CheckResult, _not_written
from lessonlib.threads import GENERATION_THREADS, torch_threads
from lessonlib.tokenizer import CharTokenizer

# Prompts for TinyTales models: an empty one, a constrained one, a whole opening, and one whose
# story is about to end (so that the loop must stop at the end marker).
GREEDY_PROMPTS = (
    "",
    "Once upon a ti",
    "Long ago, in a quiet town, there lived a shy kid named Zoe.",
    (
        "Once upon a time, there was a little kid named Mia. Mia had a little dog and a red ball. "
        "One day, Mia and the dog went to the park and met Tom. Tom said, 'Hello, Mia! I like your "
        "dog.' Mia played with the ball. In the end, Mia and Tom were the best of fri"
    ),
)


def _shorten(text: str, keep: int = 40) -> str:
    return text if len(text) <= 2 * keep + 3 else text[:keep] + "..." + text[-keep:]


def _greedy_hint(prompt: str, expected: str, got: str, boundary: str) -> str:
    """Name the usual slips in a greedy loop from how its text differs from the reference."""
    if prompt and got.startswith(prompt) and not expected.startswith(prompt):
        return "return only the new characters, without the prompt."
    if got.startswith(expected) and got[len(expected)] == boundary:
        return (
            "stop when the model picks the boundary token (tokenizer.boundary_id): it ends the "
            "story. Do not include it in the text."
        )
    if expected.startswith(got):
        return "you stopped early: keep going for max_new_tokens steps unless the story ends."
    return _GREEDY_STEPS


_GREEDY_STEPS = (
    "start the context with the boundary token (the model reads every story from its start "
    "marker), take the logits of the last position (logits[0, -1]), pick their argmax and "
    "append it."
)


def check_my_greedy(
    fn: Callable,
    *,
    model: LanguageModel,
    tokenizer: CharTokenizer,
    prompts: Sequence[str] = GREEDY_PROMPTS,
    max_new_tokens: int = 20,
    hint: bool = True,
) -> CheckResult:
    """Check `fn(model, prompt, tokenizer=..., max_new_tokens=...) -> str` against greedy decoding.

    The reference is `generate(..., temperature=0).text`: the continuation only, stopped (and
    cut) at the boundary token. An exception in `fn` is reported, not raised.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    if not prompts:
        raise ValueError("prompts must hold at least one prompt, got none")
    name = "greedy decoder"
    for number, prompt in enumerate(prompts, start=1):
        expected = generate(
            model, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens, temperature=0
        ).text
        try:
            # No gradients (the learner's loop need not turn them off), and the thread count that
            # `generate` uses: tiny per-step matrices run faster on one thread.
            with torch.inference_mode(), torch_threads(GENERATION_THREADS):
                got = fn(model, prompt, tokenizer=tokenizer, max_new_tokens=max_new_tokens)
        except NotImplementedError:
            return _not_written(fn, name)
        except Exception as error:  # noqa: BLE001 (the learner's bug is the report)
            got, problem = None, f"your function raised {type(error).__name__}: {error}"
            advice = _GREEDY_STEPS
        else:
            if not isinstance(got, str):
                problem = f"your function returned a {type(got).__name__}, expected a str"
                advice = "decode the new token ids with tokenizer.decode(...)."
            elif got == expected:
                continue
            else:
                at = next(
                    (i for i, (a, b) in enumerate(zip(expected, got)) if a != b),
                    min(len(expected), len(got)),
                )
                wanted = repr(expected[at]) if at < len(expected) else "the end of the text"
                found = repr(got[at]) if at < len(got) else "the end of the text"
                problem = f"the texts differ from character {at}: expected {wanted}, got {found}"
                advice = _greedy_hint(prompt, expected, got, tokenizer.boundary)
        lines = [f"{name}: prompt {number} of {len(prompts)} fails."]
        lines.append(f"  prompt   = {_shorten(prompt)!r}")
        lines.append(f"  max_new_tokens = {max_new_tokens}")
        lines.append(f"  expected = {_shorten(expected)!r}")
        if isinstance(got, str):
            lines.append(f"  got      = {_shorten(got)!r}")
        lines.append(f"  Problem: {problem.rstrip('.')}.")
        lines.append(f"  Hint: {advice}")
        result = CheckResult(
            passed=False, cases_run=number, first_failure="\n".join(lines), name=name
        )
        return result if hint else result.without_hint()
    return CheckResult(passed=True, cases_run=len(prompts), first_failure=None, name=name)
