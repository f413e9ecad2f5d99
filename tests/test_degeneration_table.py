"""The degeneration lab: the command at a tiny size, its agreement with the notebook's code path,
the stock sentence's repetitions, and the shipped full-size results file (regenerated, slow)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lessonlib import tinytales
from lessonlib.analysis.degeneration import self_bleu, word_frequencies, zipf_coefficient
from lessonlib.analysis.degeneration_table import (
    BEAM,
    BEAM_FIXED,
    ENDING_OPENINGS,
    ORDER,
    PAPER,
    PAPER_BESIDE,
    PAPER_LEFT_OUT,
    PAPER_ROW,
    REPEATS,
    RESULTS_PATH,
    SEEDS,
    SETTINGS,
    STORY_SEED,
    TOP_K,
    decoding_outputs,
    ends_on_ending,
    format_repetition,
    format_results,
    held_out_stories,
    lab_results,
    load_results,
    measure_methods,
    nats_per_method,
    repetition_probs,
    results_rows,
    run_beam_search,
    run_lab,
    sample_method,
    stock_sentence_frame,
)
from lessonlib.checkpoint import load_model
from lessonlib.degeneration_lab.__main__ import (
    DEFAULT_BEAM_PROMPTS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PROMPT_CHARS,
    DEFAULT_SAMPLES,
    main,
)
from lessonlib.scoring import model_char_log_probs

# A tiny size: a few seconds per run on 2 cores.
TINY = {"samples": 3, "beam_prompts": 2, "max_new_tokens": 60, "prompt_chars": 160}
TINY_ARGS = ["--samples", "3", "--beam-prompts", "2", "--max-new-tokens", "40"]


@pytest.fixture(scope="module")
def shipped():
    return load_model()


@pytest.fixture(scope="module")
def tiny_run(shipped):
    model, tokenizer = shipped
    return run_lab(model, tokenizer, **TINY)


def test_every_method_has_a_setting_a_seed_and_a_row():
    assert set(SETTINGS) == set(SEEDS) and len(set(SEEDS.values())) == len(SEEDS)
    # The seeds the notebook first drew: pure sampling 1, then the others in order from 2.
    rest = [method for method in SETTINGS if method != "pure sampling"]
    assert SEEDS == {"pure sampling": 1} | {m: 2 + list(SETTINGS).index(m) for m in rest}
    assert ORDER[:4] == ["human", "greedy", BEAM, BEAM_FIXED]
    assert set(ORDER) == {"human", BEAM, BEAM_FIXED, *SETTINGS} and len(ORDER) == len(set(ORDER))


def test_the_papers_rows_keep_the_papers_labels_and_settings():
    # Every paper row we show stands beside exactly one of ours, under the paper's own label.
    assert set(PAPER_ROW) <= set(ORDER) and sorted(PAPER_ROW.values()) == sorted(PAPER)
    assert PAPER_ROW[f"top-k={TOP_K}"] == "Top-k=40" and "Top-k=40, t=0.7" in PAPER
    assert not any(f"k={TOP_K}" in label for label in PAPER)
    assert PAPER_BESIDE[f"top-k={TOP_K}"] == ("Top-k=40", PAPER["Top-k=40"])
    assert {"Stochastic Beam, b=16", "Top-k=640"} <= set(PAPER_LEFT_OUT)
    assert any("HUSE" in label for label in PAPER_LEFT_OUT)
    # The reason is printed inside lesson 08 too: it names the section, not "lesson 08".
    assert "How much does top-k cut?" in PAPER_LEFT_OUT["Top-k=640"]
    assert "lesson 08" not in PAPER_LEFT_OUT["Top-k=640"]
    assert PAPER["Greedy"]["repetition"] == 73.66 and PAPER["Human"]["perplexity"] == 12.38


def test_held_out_stories_split_at_the_prompt_length():
    prompts, human = held_out_stories(4, 160)
    assert len(prompts) == len(human) == 4 and {len(p) for p in prompts} == {160}
    again, _ = held_out_stories(6, 160)
    assert again[:4] == prompts  # more samples only add prompts
    assert held_out_stories(4, 160, seed=7)[0] != prompts


def test_the_runner_is_the_notebooks_code_path(shipped, tiny_run):
    # The notebook samples pure sampling first, then the other methods, then beam search; the
    # runner goes in SETTINGS order. Each method's own seed makes the order irrelevant.
    model, tokenizer = shipped
    prompts, human = held_out_stories(TINY["samples"], TINY["prompt_chars"])
    kwargs = {"tokenizer": tokenizer, "max_new_tokens": TINY["max_new_tokens"]}
    generations = {"pure sampling": sample_method(model, prompts, "pure sampling", **kwargs)}
    for method in SETTINGS:
        if method not in generations:
            generations[method] = sample_method(model, prompts, method, **kwargs)
    beams = run_beam_search(model, prompts[: TINY["beam_prompts"]], **kwargs)
    fixed = run_beam_search(model, prompts[: TINY["beam_prompts"]], fixed_length=True, **kwargs)
    outputs = decoding_outputs(
        model, prompts, human, generations, beams, tokenizer=tokenizer, fixed_beams=fixed
    )
    rows = measure_methods(outputs)
    assert list(rows) == ORDER == list(tiny_run.rows)
    assert rows == tiny_run.rows
    # Without the fixed-length search its row is left out, and only it.
    fewer = decoding_outputs(model, prompts, human, generations, beams, tokenizer=tokenizer)
    assert list(measure_methods(fewer)) == [m for m in ORDER if m != BEAM_FIXED]
    assert tiny_run.prompts == prompts and tiny_run.human == human
    assert rows[BEAM].generations == TINY["beam_prompts"]
    assert rows["greedy"].generations == TINY["samples"]


def test_the_runner_is_deterministic_and_seeded_per_method(shipped, tiny_run):
    model, tokenizer = shipped
    again = run_lab(model, tokenizer, **TINY)
    assert again.rows == tiny_run.rows
    texts = {method: tuple(g.texts) for method, g in tiny_run.generations.items()}
    assert texts == {method: tuple(g.texts) for method, g in again.generations.items()}
    # Two sampling methods at temperature 1 would agree only if they shared a seed.
    assert texts["pure sampling"] != texts["sampling t=0.9"]
    assert set(tiny_run.timings) == {*SETTINGS, BEAM, BEAM_FIXED}


def test_the_fixed_length_beam_never_ends_the_story(tiny_run):
    assert len(tiny_run.fixed_beams) == TINY["beam_prompts"]
    for result in tiny_run.fixed_beams:
        assert result.stop_reason == "max_new_tokens" and not result.best.finished
        assert len(result.best.text) == TINY["max_new_tokens"]
    assert tiny_run.rows[BEAM_FIXED].valid == 0.0


def test_ending_openings_are_how_the_grammars_stories_end():
    stories = tinytales.generate_stories(60, seed=STORY_SEED)
    last_sentences = [story[story.rindex(". ", 0, len(story) - 1) + 2 :] for story in stories]
    used = {next(o for o in ENDING_OPENINGS if s.startswith(o)) for s in last_sentences}
    assert used == set(ENDING_OPENINGS)
    # A whole story ends on its ending, finished or cut short; not once more is said after it.
    assert all(ends_on_ending(story) and ends_on_ending(story[:-2]) for story in stories)
    assert not any(ends_on_ending(story + " Mia played with the ball.") for story in stories)


def test_ends_on_ending():
    loop = " Mia played with the ball." * 3
    assert ends_on_ending(loop + " In the end, Mia and Tom were the best of fri")
    assert ends_on_ending(loop + " That night,") and ends_on_ending(loop + " At last, Mia and")
    assert ends_on_ending(loop + " At last, Mia and the dog went home with the ball.")
    assert not ends_on_ending(loop) and not ends_on_ending(loop + " In the e")
    assert not ends_on_ending(" At last, Mia and the dog went home with the ball." + loop)
    with pytest.raises(TypeError, match="text must be a str"):
        ends_on_ending(None)


def test_the_command_prints_every_row_beside_the_paper_and_writes_its_results(capsys, tmp_path):
    target = tmp_path / "results.json"
    main([*TINY_ARGS, "--write", str(target)])
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    beside = [line for line in lines if "|" in line]
    assert [line[:16].rstrip() for line in beside[1:]] == ORDER
    for ours, (label, values) in PAPER_BESIDE.items():
        (row,) = [line for line in beside if line[:16].rstrip() == ours]
        assert row.split("|")[1].split()[-4:] == [
            f"{values[name]:.2f}" for name in ("perplexity", "self_bleu", "zipf", "repetition")
        ]
        assert label in row
    assert "generations per method: 3" in printed and "the first 2 prompts" in printed
    start = lines.index(
        next(line for line in lines if line.startswith("method") and "+-" not in line)
    )
    assert [line[:16].rstrip() for line in lines[start + 2 : start + 2 + len(ORDER)]] == ORDER
    assert "rule of three" in printed and "Stochastic Beam" in printed and "total:" in printed
    assert "stock sentence" in printed and f"wrote {target}" in printed
    assert "of 2 texts end on an ending sentence" in printed
    written = load_results(target)
    assert written["sizes"]["samples"] == 3 and list(written["rows"]) == ORDER


def test_nats_per_method_are_the_log_of_each_rows_perplexity(tiny_run):
    nats = nats_per_method(tiny_run.outputs)
    assert list(nats) == ORDER
    for method, (value, error) in nats.items():
        assert value == pytest.approx(math.log(tiny_run.rows[method].perplexity))
        assert error > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--samples", "1"], "--samples must be >= 2"),
        (["--samples", "many"], "--samples: invalid int value: 'many'"),
        (["--samples", "3", "--beam-prompts", "4"], "--beam-prompts must be in 2..3"),
        (["--beam-prompts", "1"], "--beam-prompts must be in 2..300"),
        (["--max-new-tokens", "5"], "--max-new-tokens must be in 20..510, got 5"),
        (["--max-new-tokens", "511"], "--max-new-tokens must be in 20..510, got 511"),
        # The shortest of the 300 stories has 247 characters; 240 new ones leave 271 in context.
        (["--prompt-chars", "0"], "--prompt-chars must be in 1..246"),
        (["--prompt-chars", "247"], "--prompt-chars must be in 1..246"),
        (["--max-new-tokens", "400"], "--prompt-chars must be in 1..111"),
        (["--seed", "0"], "--seed must not be 0 or 1"),
        (["--samples", "1000"], "--samples must be <= 574 with --seed 2020"),
    ],
)
def test_bad_arguments_name_the_parameter(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_beam_search_in_chunks_finds_what_one_batch_finds(shipped, monkeypatch):
    # Prompts of different stories, cut short so the search stays cheap: chunking must only
    # bound the memory, never change a prompt's best hypothesis.
    model, tokenizer = shipped
    prompts, _ = held_out_stories(3, 200)
    kwargs = {"tokenizer": tokenizer, "max_new_tokens": 12}
    monkeypatch.setattr("lessonlib.analysis.degeneration_table.BEAM_CHUNK", 3)
    together = run_beam_search(model, prompts, **kwargs)
    monkeypatch.setattr("lessonlib.analysis.degeneration_table.BEAM_CHUNK", 2)
    chunked = run_beam_search(model, prompts, **kwargs)
    assert len(chunked) == len(prompts)
    assert [b.best.text for b in chunked] == [b.best.text for b in together]
    assert [b.best.log_prob for b in chunked] == pytest.approx([b.best.log_prob for b in together])


def test_stock_sentence_frame_ends_where_the_middle_begins():
    stories = tinytales.generate_stories(40, seed=STORY_SEED)
    for story in stories:
        frame, sentence = stock_sentence_frame(story)
        assert story.startswith(frame) and frame.endswith("'")
        hero = frame.split(" named ")[1].split(".")[0]
        assert sentence.startswith(f" {hero} played with the ")
        # The frame ends with the greeting, so the stock sentence may follow, again and again.
        assert frame.endswith((".'", "!'")) and frame.count("'") == 2
        assert tinytales.longest_possible_prefix(frame + sentence * 3) == len(frame + sentence * 3)
    with pytest.raises(ValueError, match="whole frame"):
        stock_sentence_frame("Mia played with the ball.")


def test_repetition_probs_model_and_truth(shipped):
    model, tokenizer = shipped
    stories = tinytales.generate_stories(2, seed=STORY_SEED)
    frames, sentences = zip(*map(stock_sentence_frame, stories))
    model_probs, truth = repetition_probs(model, frames, sentences, tokenizer=tokenizer, repeats=4)
    assert model_probs.shape == truth.shape == (2, 4) and model_probs.dtype == torch.float64
    # The grammar's probability: the first saying is the first middle sentence; after it, each
    # saying also needs "another sentence" (CONTINUE_PROB) and is then the same every time.
    assert truth[:, 1:] == pytest.approx(truth[:, 1:2].expand(2, 3))
    assert truth[:, 1] == pytest.approx(truth[:, 0] * tinytales.CONTINUE_PROB)
    # The model's: the product of its character probabilities over each saying.
    frame, sentence = frames[0], sentences[0]
    chars = model_char_log_probs(model, frame + sentence * 4, tokenizer=tokenizer)[len(frame) :]
    expected = chars.view(4, -1).sum(-1).exp()
    assert model_probs[0] == pytest.approx(expected, rel=1e-5)
    alone, none = repetition_probs(
        model, frames, sentences, tokenizer=tokenizer, repeats=4, truth=False
    )
    assert none is None and torch.equal(alone, model_probs)
    # A sentence the grammar cannot say there has probability 0 under the truth, not an error.
    _, impossible = repetition_probs(model, frames[:1], [" Zzz."], tokenizer=tokenizer, repeats=2)
    assert impossible.tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        repetition_probs(model, frames, sentences, tokenizer=tokenizer, repeats=0)
    with pytest.raises(ValueError, match="equally many"):
        repetition_probs(model, frames, sentences[:1], tokenizer=tokenizer)


def test_lab_results_round_trip_and_agree_with_the_rows(tiny_run):
    results = lab_results(tiny_run)
    assert json.loads(json.dumps(results)) == results
    assert results["sizes"] == {
        "seed": STORY_SEED,
        "samples": 3,
        "beam_prompts": 2,
        "max_new_tokens": TINY["max_new_tokens"],
        "prompt_chars": 160,
        "repeats": REPEATS,
    }
    assert list(results["rows"]) == ORDER
    for method, row in results_rows(results).items():
        ours = tiny_run.rows[method]
        assert row.generations == ours.generations and row.repetition == ours.repetition
        assert row.valid == ours.valid and row.in_grammar == ours.in_grammar
        assert row.perplexity == pytest.approx(ours.perplexity, abs=1e-5)
        assert row.zipf == pytest.approx(ours.zipf, abs=1e-5)
        texts = tiny_run.outputs[method]["texts"]
        assert results["rows"][method]["self_bleu"] == pytest.approx(self_bleu(texts), abs=1e-5)
        assert row.zipf == pytest.approx(zipf_coefficient(word_frequencies(texts)), abs=1e-5)
        assert results["rows"][method]["nats"] == pytest.approx(math.log(ours.perplexity), abs=1e-5)
    repetition = results["repetition"]
    assert repetition["stories"] == 3 and len(repetition["model"]) == REPEATS
    assert repetition["rise_from_second"][1] == 0.0 and repetition["truth_spread"] < 1e-9
    assert results["beam_stop_reasons"][BEAM_FIXED] == {"max_new_tokens": 2}
    endings = [ends_on_ending(beam.best.text) for beam in tiny_run.fixed_beams]
    assert results["fixed_beam_ends_on_ending"] == sum(endings)
    table = format_results(results).splitlines()
    assert [line[:16].rstrip() for line in table[2 : 2 + len(ORDER)]] == ORDER
    assert "rule of three" in table[-1]
    saying = format_repetition(results).splitlines()
    assert [line.split()[0] for line in saying[2:]] == ["1", "2", "5", "10"]


@pytest.mark.slow
def test_the_shipped_results_file_is_what_the_command_computes(shipped):
    # The notebook reads RESULTS_PATH; regenerate it at the command's default sizes (about
    # 1.5 minutes on 2 cores) and compare every number exactly.
    model, tokenizer = shipped
    shipped_results = load_results(RESULTS_PATH)
    assert shipped_results["sizes"] == {
        "seed": STORY_SEED,
        "samples": DEFAULT_SAMPLES,
        "beam_prompts": DEFAULT_BEAM_PROMPTS,
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
        "prompt_chars": DEFAULT_PROMPT_CHARS,
        "repeats": REPEATS,
    }
    run = run_lab(
        model,
        tokenizer,
        samples=DEFAULT_SAMPLES,
        beam_prompts=DEFAULT_BEAM_PROMPTS,
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        prompt_chars=DEFAULT_PROMPT_CHARS,
    )
    assert json.loads(json.dumps(lab_results(run))) == shipped_results
