"""The experiment of Holtzman et al. 2020, Table 1, on the course GPT at any size.

The decoding methods and their seeds, the held-out prompts, the paper's values, the repetition
measurement, and the steps from generations to table rows. Lesson 08 runs it live at a small
size; `python -m lessonlib.degeneration_lab` runs it at full size and writes
`data/degeneration_lab_results.json`. The measures themselves are in `analysis.degeneration`.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lessonlib import tinytales
from lessonlib.analysis.degeneration import (
    DegenerationRow,
    continuation_log_probs,
    ends_in_loop,
    measure_decoding,
    nats_per_token,
    self_bleu_scores,
    tokens_per_text,
    word_frequencies,
    zipf_coefficient,
    zipf_standard_error,
)
from lessonlib.analysis.recorded import text_log_probs
from lessonlib.analysis.statistics import mean_and_se, share_se
from lessonlib.beam_search import BeamSearchResult, beam_search_many
from lessonlib.generation import Generation, LanguageModel, generate
from lessonlib.metrics import find_cycle, repetition_rate
from lessonlib.paths import DATA_DIR
from lessonlib.progress import progress_bar
from lessonlib.scoring import truth_char_log_probs
from lessonlib.tokenizer import CharTokenizer
from lessonlib.validation import check_int

__all__ = [
    "BEAM",
    "BEAM_CHUNK",
    "BEAM_FIXED",
    "BEAM_WIDTH",
    "ENDING_OPENINGS",
    "ORDER",
    "PAPER",
    "PAPER_BESIDE",
    "PAPER_LEFT_OUT",
    "PAPER_ROW",
    "REPEATS",
    "RESULTS_PATH",
    "SEEDS",
    "SETTINGS",
    "STORY_SEED",
    "TOP_K",
    "LabRun",
    "decoding_outputs",
    "ends_on_ending",
    "format_repetition",
    "format_results",
    "held_out_stories",
    "lab_results",
    "load_results",
    "measure_methods",
    "nats_per_method",
    "repetition_probs",
    "results_rows",
    "run_beam_search",
    "run_lab",
    "sample_method",
    "stock_sentence_frame",
]

TOP_K = 3  # our k for top-k: the cut that bites where a story makes a choice (lesson 08, sec. 3)
BEAM_WIDTH = 16
BEAM = f"beam b={BEAM_WIDTH}"  # may end the story: ranks finished stories by log-probability
BEAM_FIXED = f"beam b={BEAM_WIDTH} fixed"  # the end forbidden: exactly max_new_tokens characters
# The training stories use seed 0 and the validation stories seed 1: these were never seen.
STORY_SEED = 2020
# How the grammar's three ending sentences begin (tinytales: "In the end, Mia and Tom ...").
ENDING_OPENINGS = ("In the end,", "That night,", "At last,")
REPEATS = 10  # times the stock sentence is said in `repetition_probs` (fits the 512 context)
RESULTS_PATH = DATA_DIR / "degeneration_lab_results.json"

# Holtzman et al. 2020, Table 1: GPT-2 Large, 5,000 generations per method, in the paper's own
# row labels and settings (k of 50,257 tokens, t the temperature, b the beam width).
PAPER: dict[str, dict[str, float]] = {
    "Human": {"perplexity": 12.38, "self_bleu": 0.31, "zipf": 0.93, "repetition": 0.28},
    "Greedy": {"perplexity": 1.50, "self_bleu": 0.50, "zipf": 1.00, "repetition": 73.66},
    "Beam, b=16": {"perplexity": 1.48, "self_bleu": 0.44, "zipf": 0.94, "repetition": 28.94},
    "Pure Sampling": {"perplexity": 22.73, "self_bleu": 0.28, "zipf": 0.93, "repetition": 0.22},
    "Sampling, t=0.9": {"perplexity": 10.25, "self_bleu": 0.35, "zipf": 0.96, "repetition": 0.66},
    "Top-k=40": {"perplexity": 6.88, "self_bleu": 0.39, "zipf": 0.96, "repetition": 0.78},
    "Top-k=40, t=0.7": {"perplexity": 3.48, "self_bleu": 0.44, "zipf": 1.00, "repetition": 8.86},
    "Nucleus, p=0.95": {"perplexity": 13.13, "self_bleu": 0.32, "zipf": 0.95, "repetition": 0.36},
}
# The paper's rows (and column) this experiment leaves out, and why.
PAPER_LEFT_OUT: dict[str, str] = {
    "Stochastic Beam, b=16": "lessonlib's beam search is deterministic (no sampled beams)",
    "Top-k=640": "a milder cut than k = 40; among our 50 characters every k from 10 up cuts "
    'almost nothing ("How much does top-k cut?" in Going deeper measures k = 10), so it would '
    "repeat the pure-sampling row",
    "HUSE (column)": "a human evaluation (Hashimoto et al. 2019): people judged the texts",
}
# Our row -> the paper's row whose setting it stands for. The top-k rows are matched by effect,
# not by number: k = 40 of 50,257 tokens has no counterpart among 50 characters.
PAPER_ROW: dict[str, str] = {
    "human": "Human",
    "greedy": "Greedy",
    BEAM: "Beam, b=16",
    "pure sampling": "Pure Sampling",
    "sampling t=0.9": "Sampling, t=0.9",
    f"top-k={TOP_K}": "Top-k=40",
    f"top-k={TOP_K} t=0.7": "Top-k=40, t=0.7",
    "nucleus p=0.95": "Nucleus, p=0.95",
}
# What `format_table(..., paper=...)` takes: our row -> (the paper's label, its values).
PAPER_BESIDE: dict[str, tuple[str, dict[str, float]]] = {
    ours: (label, PAPER[label]) for ours, label in PAPER_ROW.items()
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

# The table's rows, top to bottom: the reference, the three searches, then the sampling rules.
ORDER: list[str] = ["human", "greedy", BEAM, BEAM_FIXED, "pure sampling", "sampling t=0.9"]
ORDER += ["sampling t=0.7", f"top-k={TOP_K}", f"top-k={TOP_K} t=0.7", "nucleus p=0.95"]


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
    fixed_length: bool = False,
) -> list[BeamSearchResult]:
    """Beam search of width BEAM_WIDTH for every prompt, BEAM_CHUNK prompts per batch.

    fixed_length=True forbids the end of the story until max_new_tokens characters (lesson 06:
    the most probable continuation of exactly that length, as open-ended generation asks for).
    """
    results: list[BeamSearchResult] = []
    for first in range(0, len(prompts), BEAM_CHUNK):
        results += beam_search_many(
            model, prompts[first : first + BEAM_CHUNK], tokenizer=tokenizer,
            beam_width=BEAM_WIDTH, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
            min_new_tokens=max_new_tokens if fixed_length else None, record_steps=False,
        )  # fmt: skip
    return results


def _outputs(
    prompts: list[str], texts: list[str], finished: list[bool], log_probs: list[float]
) -> dict[str, list]:
    return {"prompts": prompts, "texts": texts, "finished": finished, "log_probs": log_probs}


def decoding_outputs(
    model: LanguageModel,
    prompts: list[str],
    human: list[str],
    generations: Mapping[str, Generation],
    beams: Sequence[BeamSearchResult],
    *,
    tokenizer: CharTokenizer,
    fixed_beams: Sequence[BeamSearchResult] = (),
) -> dict[str, dict[str, list]]:
    """`measure_decoding`'s arguments per method: human text, each sampled method, beam search.

    Log-probabilities are the model's own, at temperature 1: recorded while sampling, reported
    by beam search, and one batched forward pass for the human text. Beam search continued the
    first len(beams) prompts; the fixed-length beam search (row BEAM_FIXED, left out when
    `fixed_beams` is empty) the first len(fixed_beams).
    """
    done = [True] * len(human)
    human_scores = continuation_log_probs(model, prompts, human, tokenizer=tokenizer, finished=done)
    outputs = {"human": _outputs(prompts, human, done, [float(s.sum()) for s in human_scores])}
    for method, generation in generations.items():
        outputs[method] = _outputs(
            prompts, generation.texts, generation.finished, text_log_probs(generation)
        )
    for method, searched in ((BEAM, beams), (BEAM_FIXED, fixed_beams)):
        if method == BEAM_FIXED and not searched:
            continue
        best = [beam.best for beam in searched]
        outputs[method] = _outputs(
            prompts[: len(best)],
            [hypothesis.text for hypothesis in best],
            [hypothesis.finished for hypothesis in best],
            [hypothesis.log_prob for hypothesis in best],
        )
    return outputs


def measure_methods(outputs: Mapping[str, Mapping[str, list]]) -> dict[str, DegenerationRow]:
    """Each method's table row (`measure_decoding`), in ORDER (methods `outputs` lacks left out)."""
    return {m: measure_decoding(m, **outputs[m]) for m in ORDER if m in outputs}


def nats_per_method(outputs: Mapping[str, Mapping[str, list]]) -> dict[str, tuple[float, float]]:
    """Each method's nats per character under the model and its standard error, in ORDER.

    The log of the table's perplexity: near 1 a perplexity hides differences this scale shows.
    A finished generation's end marker counts as a token, as in the perplexity.
    """
    nats = {}
    for method in (m for m in ORDER if m in outputs):
        out = outputs[method]
        nats[method] = nats_per_token(
            out["log_probs"], tokens_per_text(out["texts"], out["finished"])
        )
    return nats


def stock_sentence_frame(story: str) -> tuple[str, str]:
    """A story's frame up to its first middle sentence, and its hero's stock sentence (" Mia ...")."""
    if not isinstance(story, str):
        raise TypeError(f"story must be a str, got {type(story).__name__}")
    hero = re.search(r" named (\w+)\.", story)
    thing = re.search(r" and a \w+ (\w+)\. One day,", story)
    opening = story.find("'")  # the friend's greeting is the frame's only quotation
    closing = story.find("'", opening + 1)
    if hero is None or thing is None or opening < 0 or closing < 0:
        raise ValueError(f"story must be a TinyTales story with its whole frame, got {story!r}")
    return story[: closing + 1], " " + tinytales.loop_sentence(hero[1], thing[1])


def ends_on_ending(text: str) -> bool:
    """Whether the last sentence of `text`, finished or cut short, is a TinyTales ending."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    start = max(text.rfind(opening) for opening in ENDING_OPENINGS)
    return start >= 0 and "." not in text[start:-1]  # no full stop before the last character


def repetition_probs(
    model: LanguageModel,
    frames: Sequence[str],
    sentences: Sequence[str],
    *,
    tokenizer: CharTokenizer,
    repeats: int = REPEATS,
    truth: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """The model's and the grammar's probability of each saying of a sentence said again and again.

    After frames[i], sentences[i] is said `repeats` times; entry [i, k] is the probability of
    the (k + 1)-th saying given the frame and the k sayings before it: float64 tensors
    (len(frames), repeats), the model's from one batched forward pass, the grammar's exact
    (0 where the grammar cannot say it; None when truth=False, as it costs more than the model).
    Holtzman et al. found that GPT-2's probability of a repeated phrase grows with each
    repetition; for a story's stock sentence after its frame (`stock_sentence_frame`), the
    grammar's is the same at every saying after the first.
    """
    repeats = check_int("repeats", repeats, low=1)
    if len(frames) != len(sentences) or not sentences or not all(sentences):
        raise ValueError(
            f"frames and sentences must be equally many ({len(frames)} and {len(sentences)}), "
            "at least one, and every sentence non-empty"
        )
    texts = [sentence * repeats for sentence in sentences]
    scores = continuation_log_probs(
        model, list(frames), texts, tokenizer=tokenizer, finished=[False] * len(texts)
    )
    by_saying = [score.view(repeats, -1).sum(-1).exp() for score in scores]
    if not truth:
        return torch.stack(by_saying), None
    exact = [
        truth_char_log_probs(frame + text)[len(frame) :].view(repeats, -1).sum(-1).exp()
        for frame, text in zip(frames, texts)
    ]
    return torch.stack(by_saying), torch.stack(exact)


@dataclass(frozen=True)
class LabRun:
    """One run of the experiment: what was generated, how long it took, and the table's rows."""

    prompts: list[str]
    human: list[str]
    seed: int  # of the held-out stories
    max_new_tokens: int  # the length cap of every continuation (and the fixed beam's length)
    generations: dict[str, Generation]
    beams: list[BeamSearchResult]
    fixed_beams: list[BeamSearchResult]  # beam search with the end forbidden (row BEAM_FIXED)
    timings: dict[str, float]  # seconds of generation per method (both beam searches included)
    measure_seconds: float  # scoring the human text and computing every row
    outputs: dict[str, dict[str, list]]  # `decoding_outputs`: texts and log-probs per method
    rows: dict[str, DegenerationRow]
    repetitions: tuple[Tensor, Tensor | None]  # `repetition_probs` of the held-out stories


def _timed(work: Mapping[str, Any], progress: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """Each call of `work` in turn: its result and its seconds, by name."""
    results, timings = {}, {}
    # Without a terminal (a log, a test) the bar is off: show=None asks tqdm to check.
    bar = progress_bar(work, desc="generating", show=None if progress else False)
    for method in bar:
        bar.set_postfix_str(method)
        start = time.perf_counter()
        results[method] = work[method]()
        timings[method] = time.perf_counter() - start
    return results, timings


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
    """The experiment at the given size: every method on every prompt, then the rows.

    Beam search, both kinds, continues the first `beam_prompts` prompts (16 rows per prompt);
    the stock sentence's repetition probabilities are measured on every held-out story.
    """
    prompts, human = held_out_stories(samples, prompt_chars, seed=seed)
    sample = partial(
        sample_method, model, prompts, tokenizer=tokenizer, max_new_tokens=max_new_tokens
    )
    work = {method: partial(sample, method) for method in SETTINGS}
    search = partial(
        run_beam_search, model, prompts[:beam_prompts], tokenizer=tokenizer,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    work[BEAM], work[BEAM_FIXED] = search, partial(search, fixed_length=True)
    results, timings = _timed(work, progress)
    beams, fixed_beams = results.pop(BEAM), results.pop(BEAM_FIXED)
    start = time.perf_counter()
    outputs = decoding_outputs(
        model, prompts, human, results, beams, tokenizer=tokenizer, fixed_beams=fixed_beams
    )
    rows = measure_methods(outputs)
    frames, sentences = zip(*(stock_sentence_frame(p + rest) for p, rest in zip(prompts, human)))
    repetitions = repetition_probs(model, frames, sentences, tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    return LabRun(
        prompts, human, seed, max_new_tokens, results, beams, fixed_beams, timings, seconds, outputs,
        rows, repetitions,
    )  # fmt: skip


# Decimals kept in the results file: far below every standard error, and far above the float
# rounding that could differ between machines.
RESULT_DECIMALS = 5


def _rounded(value: float) -> float:
    return round(float(value), RESULT_DECIMALS)


def _row_results(run: LabRun) -> dict[str, dict[str, Any]]:
    """Per method: the table's measures, counts of generations, and standard errors."""
    nats = nats_per_method(run.outputs)
    rows: dict[str, dict[str, Any]] = {}
    for method, row in run.rows.items():
        texts = run.outputs[method]["texts"]
        bleu_mean, bleu_error = mean_and_se(self_bleu_scores(texts))
        repeated, repeated_error = mean_and_se([repetition_rate(t) for t in texts])
        counts = {
            name: round(getattr(row, name) * row.generations)
            for name in ("repetition", "valid", "in_grammar")
        }
        rows[method] = {
            "generations": row.generations,
            "loops": counts["repetition"],
            "valid": counts["valid"],
            "in_grammar": counts["in_grammar"],
            "repeated": _rounded(repeated),
            "repeated_se": _rounded(repeated_error),
            "perplexity": _rounded(row.perplexity),
            "nats": _rounded(nats[method][0]),
            "nats_se": _rounded(nats[method][1]),
            "self_bleu": _rounded(bleu_mean),
            "self_bleu_se": _rounded(bleu_error),
            "zipf": _rounded(row.zipf),
            "zipf_se": _rounded(zipf_standard_error(texts)),
            "distinct": _rounded(row.distinct),
            "true_log_prob": _rounded(row.true_log_prob),
        }
    return rows


def _beam_prompt_results(run: LabRun) -> dict[str, dict[str, float]]:
    """Self-BLEU and Zipf on the beam prompts alone: they depend on how many texts there are."""
    matched = {}
    for method in ("human", "greedy", BEAM, BEAM_FIXED, "pure sampling", "nucleus p=0.95"):
        texts = run.outputs[method]["texts"][: len(run.beams)]
        bleu_mean, bleu_error = mean_and_se(self_bleu_scores(texts))
        matched[method] = {
            "self_bleu": _rounded(bleu_mean),
            "self_bleu_se": _rounded(bleu_error),
            "zipf": _rounded(zipf_coefficient(word_frequencies(texts))),
            "zipf_se": _rounded(zipf_standard_error(texts)),
        }
    return matched


def _repetition_results(model_probs: Tensor, truth_probs: Tensor) -> dict[str, Any]:
    """The stock sentence's probability at each saying, under the model (s.e.) and the grammar."""
    # From the second saying on (the first repetition) the grammar's value is constant: the
    # rise of each saying above the second, per story, is the paired measure of reinforcement.
    second = model_probs[:, 1]
    rise = [mean_and_se((column - second).tolist()) for column in model_probs.T]
    by_saying = [mean_and_se(column.tolist()) for column in model_probs.T]
    return {
        "stories": model_probs.shape[0],
        "model": [_rounded(mean) for mean, _ in by_saying],
        "model_se": [_rounded(error) for _, error in by_saying],
        "truth": [_rounded(value) for value in truth_probs.mean(0).tolist()],
        "truth_spread": _rounded(
            float((truth_probs.max(0).values - truth_probs.min(0).values).max())
        ),
        "rise_from_second": [_rounded(mean) for mean, _ in rise],
        "rise_from_second_se": [_rounded(error) for _, error in rise],
    }


def lab_results(run: LabRun) -> dict[str, Any]:
    """The run's numbers as JSON-ready data (what `RESULTS_PATH` holds): rows, errors, repeats.

    Shares are counts of generations; every float is rounded to RESULT_DECIMALS. "repeated" is
    the mean share of a generation's word 4-grams said before in it (`metrics.repetition_rate`:
    repetition anywhere, where a loop is judged by the tail).
    """
    model_probs, truth_probs = run.repetitions
    return {
        "command": "python -m lessonlib.degeneration_lab --write data/degeneration_lab_results.json",
        "sizes": {
            "seed": run.seed,
            "samples": len(run.prompts),
            "beam_prompts": len(run.beams),
            "max_new_tokens": run.max_new_tokens,
            "prompt_chars": len(run.prompts[0]),
            "repeats": model_probs.shape[1],
        },
        "rows": _row_results(run),
        "on_beam_prompts": _beam_prompt_results(run),
        "greedy_periodic_loops": sum(
            find_cycle(text) is not None
            for text in run.outputs["greedy"]["texts"]
            if ends_in_loop(text)
        ),
        # Forbidden to end, the fixed-length beam can still write an ending, as its last sentence.
        "fixed_beam_ends_on_ending": sum(ends_on_ending(b.best.text) for b in run.fixed_beams),
        "beam_stop_reasons": {
            method: dict(sorted(Counter(beam.stop_reason for beam in beams).items()))
            for method, beams in ((BEAM, run.beams), (BEAM_FIXED, run.fixed_beams))
        },
        "repetition": _repetition_results(model_probs, truth_probs),
    }


def load_results(path: Path = RESULTS_PATH) -> dict[str, Any]:
    """The full-size results the command wrote (`--write`), as `lab_results` made them."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def results_rows(results: Mapping[str, Any]) -> dict[str, DegenerationRow]:
    """The results file's rows as DegenerationRows (for `format_table`), in ORDER."""
    rows = {}
    for method in (m for m in ORDER if m in results["rows"]):
        row, n = results["rows"][method], results["rows"][method]["generations"]
        rows[method] = DegenerationRow(
            method, n, row["perplexity"], row["self_bleu"], row["zipf"], row["loops"] / n,
            row["distinct"], row["valid"] / n, row["in_grammar"] / n, row["true_log_prob"],
        )  # fmt: skip
    return rows


def format_results(results: Mapping[str, Any]) -> str:
    """The results' main columns, each value with its standard error in parentheses."""
    head = f"{'method':<16}{'n':>4}{'loop %':>13}{'repeated %':>13}{'valid %':>14}"
    head += f"{'nats/char':>17}{'Self-BLEU4':>15}{'Zipf':>13}"
    lines = [head, "-" * len(head)]
    for method in (m for m in ORDER if m in results["rows"]):
        row, n = results["rows"][method], results["rows"][method]["generations"]
        loops, valid = row["loops"] / n, row["valid"] / n
        line = f"{method:<16}{n:>4}"
        line += f"{100 * loops:>7.1f} ({100 * share_se(loops, n):.1f})"
        line += f"{100 * row['repeated']:>7.1f} ({100 * row['repeated_se']:.1f})"
        line += f"{100 * valid:>8.1f} ({100 * share_se(valid, n):.1f})"
        line += f"{row['nats']:>8.4f} ({row['nats_se']:.4f})"
        line += f"{row['self_bleu']:>7.3f} ({row['self_bleu_se']:.3f})"
        line += f"{row['zipf']:>6.2f} ({row['zipf_se']:.2f})"
        lines.append(line)
    sizes = sorted({row["generations"] for row in results["rows"].values()}, reverse=True)
    bounds = ", ".join(f"{min(300 / n, 100):.0f} for n = {n}" for n in sizes)
    lines.append(
        "(one standard error). A share of 0 or 100% can still be off by up to 3/n (rule of "
        f"three): in points, {bounds}."
    )
    return "\n".join(lines)


def format_repetition(results: Mapping[str, Any], sayings: Sequence[int] = (1, 2, 5, 10)) -> str:
    """The stock sentence's probability at some sayings: the model's (s.e.) beside the truth."""
    repetition = results["repetition"]
    head = f"{'saying':>6}{'model P (s.e.)':>17}{'grammar P':>11}{'rise over 2nd (s.e.)':>23}"
    lines = [head, "-" * len(head)]
    for saying in sayings:
        k = saying - 1
        lines.append(
            f"{saying:>6}{repetition['model'][k]:>10.3f} ({repetition['model_se'][k]:.3f})"
            f"{repetition['truth'][k]:>11.3f}{repetition['rise_from_second'][k]:>+15.3f} "
            f"({repetition['rise_from_second_se'][k]:.3f})"
        )
    return "\n".join(lines)
