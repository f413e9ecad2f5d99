"""The degeneration lab: the command at a tiny size, its agreement with the notebook's code path."""

from __future__ import annotations

import math

import pytest

from lessonlib.checkpoint import load_model
from lessonlib.degeneration_lab import (
    BEAM,
    ORDER,
    PAPER,
    SEEDS,
    SETTINGS,
    decoding_outputs,
    held_out_stories,
    main,
    measure_methods,
    nats_per_method,
    run_beam_search,
    run_lab,
    sample_method,
)

# A tiny size: a second or two per run on 2 cores.
TINY = {"samples": 3, "beam_prompts": 2, "max_new_tokens": 160, "prompt_chars": 160}
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
    assert ORDER[:3] == ["human", "greedy", BEAM] and set(ORDER) == {"human", BEAM, *SETTINGS}
    assert len(ORDER) == len(set(ORDER)) and set(PAPER) <= set(ORDER)


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
    outputs = decoding_outputs(model, prompts, human, generations, beams, tokenizer=tokenizer)
    rows = measure_methods(outputs)
    assert list(rows) == ORDER == list(tiny_run.rows)
    assert rows == tiny_run.rows
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
    assert set(tiny_run.timings) == {*SETTINGS, BEAM}


def test_the_command_prints_every_row_beside_the_paper(capsys):
    main(TINY_ARGS)
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    table = [line for line in lines if "|" in line]
    assert [line[:16].rstrip() for line in table[1:]] == ORDER
    for method, values in PAPER.items():
        (row,) = [line for line in table if line[:16].rstrip() == method]
        assert f"{values['repetition']:.2f}" in row.split("|")[1]
        assert f"{values['perplexity']:.2f}" in row.split("|")[1]
    assert "generations per method: 3" in printed and "the first 2 prompts" in printed
    errors = lines[lines.index(next(line for line in lines if "sqrt(p(1-p)/n)" in line)) + 3 :]
    assert [line[:16].rstrip() for line in errors[: len(ORDER)]] == ORDER
    assert "rule of three" in printed and "total:" in printed
    start = lines.index(next(line for line in lines if line.startswith("log-probability under")))
    nats = lines[start + 1 : start + 1 + len(ORDER)]
    assert [line[2:18].rstrip() for line in nats] == ORDER
    assert nats[0].endswith("(1.00 x human)") and all(" +- " in line for line in nats)


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
    monkeypatch.setattr("lessonlib.degeneration_lab.BEAM_CHUNK", 3)
    together = run_beam_search(model, prompts, **kwargs)
    monkeypatch.setattr("lessonlib.degeneration_lab.BEAM_CHUNK", 2)
    chunked = run_beam_search(model, prompts, **kwargs)
    assert len(chunked) == len(prompts)
    assert [b.best.text for b in chunked] == [b.best.text for b in together]
    assert [b.best.log_prob for b in chunked] == pytest.approx([b.best.log_prob for b in together])
