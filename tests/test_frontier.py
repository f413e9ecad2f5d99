"""The junk/lost frontier: exact per-step quantities, reference points, sweeps and comparisons."""

from __future__ import annotations

import ast
import inspect
import itertools
import math

import pytest
import torch
from matplotlib.figure import Figure

from lessonlib import tinytales
from lessonlib.analysis import frontier
from lessonlib.analysis.frontier import (
    FAMILIES,
    HELD_OUT_SEED,
    ORACLE,
    UNTRUNCATED,
    HeldOutSteps,
    format_frontier,
    format_matched,
    frontier_curves,
    frontier_point,
    held_out_stories,
    junk_and_lost,
    lost_at_junk,
    oracle_probs,
    plot_frontier,
    rank_at_junk,
    reference_points,
    teacher_forced_steps,
)
from lessonlib.sampling import sampling_probs
from lessonlib.train import TrainSettings, corpus_tokenizer
from tests.stub_models import lively_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The families that only cut: their kept set must shrink along the sweep.
TRUNCATIONS = ("top-k", "top-p", "min-p", "typical", "eta")


def synthetic_steps(stories: int, *, seed: int, vocab: int = 8) -> HeldOutSteps:
    """Stories of 5..40 steps: a sparse truth, and a model that puts 3% of its mass anywhere."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.randint(5, 41, (stories,), generator=generator).tolist()
    rows = sum(sizes)
    support = torch.rand(rows, vocab, generator=generator) < 0.3
    support[torch.arange(rows), torch.randint(vocab, (rows,), generator=generator)] = True
    weights = torch.rand(rows, vocab, generator=generator, dtype=torch.float64) * support
    truth = weights / weights.sum(dim=-1, keepdim=True)
    noise = torch.rand(rows, vocab, generator=generator, dtype=torch.float64) ** 4
    model = 0.97 * truth + 0.03 * noise / noise.sum(dim=-1, keepdim=True)
    return HeldOutSteps(
        logits=model.log().float(),
        truth=truth,
        story=torch.repeat_interleave(torch.arange(stories), torch.tensor(sizes)),
        steps_per_story=tuple(sizes),
        cut=0,
    )


def ranked_rows(rows: int, *, seed: int, vocab: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and a truth whose support is each row's top 1..4 tokens under the model."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(rows, vocab, generator=generator, dtype=torch.float64)
    allowed = torch.randint(1, 5, (rows, 1), generator=generator)
    ranks = logits.argsort(dim=-1, descending=True).argsort(dim=-1)
    truth = torch.rand(rows, vocab, generator=generator, dtype=torch.float64) * (ranks < allowed)
    return logits, truth / truth.sum(dim=-1, keepdim=True)


# --- junk and lost, step by step -------------------------------------------------------------


def test_junk_and_lost_equal_hand_computed_values() -> None:
    probs = torch.tensor([0.7, 0.1, 0.2, 0.0])
    truth = torch.tensor([0.5, 0.0, 0.4, 0.1])
    junk, lost = junk_and_lost(probs, truth)
    # junk: the 0.1 on token 1, where P* = 0; lost: 0.4 - 0.2 on token 2, plus 0.1 on token 3.
    assert float(junk) == pytest.approx(0.1)
    assert float(lost) == pytest.approx(0.3)
    rows_junk, rows_lost = junk_and_lost(torch.stack([probs, truth]), torch.stack([truth, truth]))
    assert rows_junk.tolist() == pytest.approx([0.1, 0.0])
    assert rows_lost.tolist() == pytest.approx([0.3, 0.0])


def test_lost_is_the_total_variation_distance_so_never_below_junk() -> None:
    _, truth = ranked_rows(200, seed=1)
    probs = torch.softmax(torch.randn(200, 10, dtype=torch.float64), dim=-1)
    junk, lost = junk_and_lost(probs, truth)
    assert torch.allclose(lost, 0.5 * (probs - truth).abs().sum(dim=-1))
    assert bool((junk <= lost + 1e-12).all())


@pytest.mark.parametrize("setting", [{"top_k": 2}, {"top_p": 0.8}, {"min_p": 0.3}])
def test_truncating_a_perfect_model_loses_exactly_the_mass_it_cuts(setting) -> None:
    _, truth = ranked_rows(300, seed=2)
    probs = sampling_probs(truth.log(), **setting)
    junk, lost = junk_and_lost(probs, truth)
    cut = (truth * (probs == 0)).sum(dim=-1)
    assert bool((junk == 0).all())
    assert torch.allclose(lost, cut)
    assert float(cut.sum()) > 1  # the rule did cut something


def test_cooling_a_perfect_model_is_charged() -> None:
    truth = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    _, at_one = junk_and_lost(sampling_probs(truth.log(), temperature=1.0), truth)
    junk, cooled = junk_and_lost(sampling_probs(truth.log(), temperature=0.5), truth)
    assert at_one.tolist() == pytest.approx([0.0, 0.0])
    assert bool((junk == 0).all())
    assert float(cooled[0]) > 0.1  # the reweighting moved true mass away from 0.3 and 0.1
    assert float(cooled[1]) == pytest.approx(0.0)  # a uniform support is unchanged by tau


# --- the reference points --------------------------------------------------------------------


def test_the_oracle_has_no_junk_and_never_more_lost_than_the_untruncated_model() -> None:
    steps = synthetic_steps(30, seed=3)
    oracle = oracle_probs(steps)
    junk, lost = junk_and_lost(oracle, steps.truth)
    _, lost_untruncated = junk_and_lost(torch.softmax(steps.logits.double(), -1), steps.truth)
    assert bool((junk == 0).all())
    # Inside the support the oracle scales every probability up, so no true mass is lost more.
    assert bool((lost <= lost_untruncated + 1e-7).all())
    references = reference_points(steps)
    assert references[ORACLE].junk.value == 0
    assert references[UNTRUNCATED].junk.value > 0.005
    assert references[ORACLE].lost.value < references[UNTRUNCATED].lost.value


def test_the_oracle_is_not_a_floor_step_by_step() -> None:
    # P* = (0.98, 0.02) but the model says (0.5, 0.5): cutting the true second character helps.
    truth = torch.tensor([0.98, 0.02, 0.0], dtype=torch.float64)
    logits = torch.tensor([0.1, 0.0, -3.0], dtype=torch.float64)
    oracle = torch.softmax(logits.masked_fill(truth == 0, -math.inf), dim=-1)
    _, oracle_lost = junk_and_lost(oracle, truth)
    junk, greedy_lost = junk_and_lost(sampling_probs(logits, top_k=1), truth)
    assert float(junk) == 0 and float(greedy_lost) < float(oracle_lost)


def test_frontier_point_averages_per_character_with_stories_weighted_by_length() -> None:
    steps = synthetic_steps(25, seed=4)
    point = frontier_point(steps, {"top_p": 0.9})
    junk, lost = junk_and_lost(sampling_probs(steps.logits, top_p=0.9), steps.truth)
    assert point.junk.value == pytest.approx(float(junk.mean()))
    assert point.lost.value == pytest.approx(float(lost.mean()))
    assert point.label == "top-p 0.9" and point.junk.units == 25
    assert float(point.lost_by_story.sum()) == pytest.approx(float(lost.sum()))


def test_standard_errors_shrink_with_more_stories() -> None:
    few = frontier_point(synthetic_steps(20, seed=5), {"top_p": 0.99})
    many = frontier_point(synthetic_steps(320, seed=5), {"top_p": 0.99})
    assert few.junk.value > 0.001 and many.junk.value > 0.001
    assert many.junk.standard_error < few.junk.standard_error / 2
    assert many.lost.standard_error < few.lost.standard_error / 2


# --- the families ----------------------------------------------------------------------------


def test_every_family_starts_untruncated_and_is_a_curve() -> None:
    steps = synthetic_steps(3, seed=16)
    for name, settings in FAMILIES.items():
        assert settings[0] == {}, name
        assert 8 <= len(settings) <= 15, name
        labels = [frontier_point(steps, s).label for s in settings]
        assert labels[0] == "tau 1" and len(set(labels)) == len(labels), name
    assert frontier_point(steps, {"temperature": 0.7, "min_p": 0.1}).label == "tau 0.7, min-p 0.1"


def test_the_kept_set_shrinks_along_every_truncation_sweep() -> None:
    logits, _ = ranked_rows(300, seed=6)
    for name in TRUNCATIONS:
        kept = [(sampling_probs(logits, **s) > 0).sum(dim=-1) for s in FAMILIES[name]]
        for looser, stricter in itertools.pairwise(kept):
            assert bool((stricter <= looser).all()), name
        assert bool((kept[-1] < kept[0]).any()), name


def test_junk_falls_along_the_sweeps_where_the_model_ranks_the_truth_first() -> None:
    # When every allowed character outranks every forbidden one, temperature, top-k, top-p,
    # min-p and eta only ever remove (or shrink) junk first: junk cannot rise along the sweep.
    logits, truth = ranked_rows(300, seed=7)
    for name in ("temperature", "top-k", "top-p", "min-p", "eta"):
        junk = [junk_and_lost(sampling_probs(logits, **s), truth)[0] for s in FAMILIES[name]]
        for looser, stricter in itertools.pairwise(junk):
            assert bool((stricter <= looser + 1e-12).all()), name
        assert float(junk[-1].sum()) < float(junk[0].sum()), name


def test_typical_can_raise_junk_by_dropping_the_top_character() -> None:
    # Same ranking condition, yet typical keeps the middle of the distribution and drops the top.
    truth = torch.tensor([0.7, 0.3, 0.0, 0.0], dtype=torch.float64)
    logits = torch.tensor([0.5, 0.22, 0.18, 0.1], dtype=torch.float64).log()
    loose, _ = junk_and_lost(sampling_probs(logits), truth)
    strict, _ = junk_and_lost(sampling_probs(logits, typical_p=0.4), truth)
    assert float(strict) > float(loose)


def test_temperature_can_raise_junk_when_a_forbidden_character_is_on_top() -> None:
    truth = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    logits = torch.tensor([0.4, 0.3, 0.3], dtype=torch.float64).log()
    loose, _ = junk_and_lost(sampling_probs(logits), truth)
    cooled, _ = junk_and_lost(sampling_probs(logits, temperature=0.5), truth)
    assert float(cooled) > float(loose)


# --- matched junk ----------------------------------------------------------------------------


def test_lost_at_junk_interpolates_and_the_mixed_decoder_achieves_it() -> None:
    steps = synthetic_steps(40, seed=8)
    references = reference_points(steps)
    settings = [{}, {"min_p": 0.05}, {"min_p": 0.2}, {"min_p": 0.6}]
    points = [frontier_point(steps, s) for s in settings]
    top = references[UNTRUNCATED].junk.value
    # At a setting's own junk the answer is that setting's lost.
    exact = lost_at_junk(points, references, points[2].junk.value / top)
    assert exact.value == pytest.approx(points[2].lost.value)
    # Halfway between two settings: a per-step mixture of them has this junk and no more lost.
    target = (points[1].junk.value + points[2].junk.value) / 2
    between = lost_at_junk(points, references, target / top)
    assert between.value == pytest.approx((points[1].lost.value + points[2].lost.value) / 2)
    mix = 0.5 * (sampling_probs(steps.logits, min_p=0.05) + sampling_probs(steps.logits, min_p=0.2))
    junk, lost = junk_and_lost(mix, steps.truth)
    assert float(junk.mean()) == pytest.approx(target)
    assert float(lost.mean()) <= between.value + 1e-9
    assert between.standard_error > 0
    # Below the strictest setting's junk a family never gets there.
    cooling = [frontier_point(steps, {"temperature": t}) for t in (1.0, 0.5, 0.2)]
    assert cooling[-1].junk.value > 0
    assert lost_at_junk(cooling, references, 0.5 * cooling[-1].junk.value / top) is None


def test_rank_at_junk_tells_a_real_gap_from_a_tie() -> None:
    steps = synthetic_steps(120, seed=9)
    references = reference_points(steps)
    curves = frontier_curves(
        steps,
        {
            "min-p": FAMILIES["min-p"],
            "min-p again": FAMILIES["min-p"],
            "temperature": FAMILIES["temperature"],
        },
    )
    assert all(p.junk.value >= 0 for points in curves.values() for p in points)
    (level,) = rank_at_junk(curves, references, [0.5])
    assert set(level.ranking[:2]) == {"min-p", "min-p again"}
    assert level.best_vs_second.difference == 0 and "within noise" in level.verdict
    del curves["min-p again"]
    (level,) = rank_at_junk(curves, references, [0.5])
    assert level.ranking == ("min-p", "temperature")
    gap = level.best_vs_second
    assert gap.difference < -4 * gap.se and "beats temperature" in level.verdict
    behind = level.behind_best["temperature"]
    assert behind.difference == pytest.approx(-gap.difference) and behind.se == gap.se
    (zero,) = rank_at_junk(curves, references, [0.0])
    assert zero.ranking == ("min-p",) and zero.unreached == ("temperature",)
    assert zero.verdict == "min-p alone reaches this junk"


# --- reading held-out stories ----------------------------------------------------------------


def test_the_held_out_seed_is_neither_the_training_nor_the_validation_seed() -> None:
    settings = TrainSettings()
    assert HELD_OUT_SEED not in (settings.corpus_seed, settings.val_seed)
    assert held_out_stories(5) != tinytales.generate_stories(5, seed=settings.corpus_seed)
    with pytest.raises(ValueError, match="seed must not be a seed of the training"):
        held_out_stories(5, seed=settings.corpus_seed)
    with pytest.raises(ValueError, match="seed must not be"):
        held_out_stories(5, seed=settings.val_seed)


def test_teacher_forced_steps_match_the_model_read_story_by_story() -> None:
    tokenizer = corpus_tokenizer()
    model = lively_gpt(tokenizer.vocab_size, block_size=512)
    stories = held_out_stories(3, seed=11)
    steps = teacher_forced_steps(model, tokenizer, stories, batch_size=2)
    assert steps.steps_per_story == tuple(len(s) + 1 for s in stories) and steps.cut == 0
    assert steps.truth.dtype == torch.float64
    assert torch.allclose(
        steps.truth.sum(dim=-1), torch.ones(len(steps.story), dtype=torch.float64)
    )
    rows = steps.story == 1
    alone = model(torch.tensor([[tokenizer.boundary_id, *tokenizer.encode(stories[1])]]))[0]
    assert torch.allclose(steps.logits[rows], alone, atol=1e-5)
    # The last row of a story predicts its end; the first row, its first character.
    end_row = int(rows.nonzero()[-1])
    assert float(steps.truth[end_row, tokenizer.boundary_id]) == 1.0
    first = tinytales.next_char_vector("", tokenizer.chars)
    assert steps.truth[int(rows.nonzero()[0])].tolist() == pytest.approx(first)


def test_stories_longer_than_the_context_are_cut_and_counted() -> None:
    tokenizer = corpus_tokenizer()
    model = lively_gpt(tokenizer.vocab_size, block_size=32)
    stories = held_out_stories(2, seed=12)
    steps = teacher_forced_steps(model, tokenizer, stories)
    assert steps.steps_per_story == (32, 32)
    assert steps.cut == sum(len(s) + 1 - 32 for s in stories)


# --- bad input -------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors() -> None:
    probs = torch.tensor([0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="same shape"):
        junk_and_lost(probs, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="probs must be finite and >= 0"):
        junk_and_lost(torch.tensor([1.5, -0.5, 0.0]), probs)
    with pytest.raises(ValueError, match="truth rows must sum to 1"):
        junk_and_lost(probs, torch.tensor([0.5, 0.2, 0.0]))
    with pytest.raises(TypeError, match="probs must be a floating torch.Tensor"):
        junk_and_lost([0.5, 0.5], probs)
    steps = synthetic_steps(4, seed=13)
    with pytest.raises(ValueError, match="unknown keys \\['top_q'\\]"):
        frontier_point(steps, {"top_q": 0.9})
    with pytest.raises(ValueError, match="top_p must be in"):
        frontier_curves(steps, {"top-p": [{}, {"top_p": 1.5}]})
    with pytest.raises(TypeError, match="steps must be a HeldOutSteps"):
        frontier_point(steps.logits, {})
    with pytest.raises(ValueError, match="truth must be float64"):
        HeldOutSteps(steps.logits, steps.truth.float(), steps.story, steps.steps_per_story, 0)
    with pytest.raises(ValueError, match="story must be each row's story index"):
        HeldOutSteps(steps.logits, steps.truth, steps.story.flip(0), steps.steps_per_story, 0)
    tokenizer = corpus_tokenizer()
    model = lively_gpt(tokenizer.vocab_size, block_size=64)
    with pytest.raises(ValueError, match="stories must be TinyTales stories"):
        teacher_forced_steps(model, tokenizer, ["Once upon a tame"])
    with pytest.raises(TypeError, match="stories must be a non-empty sequence"):
        teacher_forced_steps(model, tokenizer, "Once upon a time")
    references = reference_points(steps)
    points = [frontier_point(steps, {}), frontier_point(steps, {"top_k": 1})]
    with pytest.raises(ValueError, match="fraction must be a finite number in \\[0, 1\\]"):
        lost_at_junk(points, references, 1.5)
    other = reference_points(synthetic_steps(4, seed=14))
    with pytest.raises(ValueError, match="measured on the same stories"):
        lost_at_junk(points, other, 0.5)


# --- output ----------------------------------------------------------------------------------


def test_the_table_and_the_plot_show_every_family_and_both_references() -> None:
    steps = synthetic_steps(30, seed=15)
    references = reference_points(steps)
    families = {name: FAMILIES[name] for name in ("top-p", "temperature")}
    curves = frontier_curves(steps, families)
    table = format_frontier(curves, references)
    assert table == format_frontier(curves, references)  # deterministic
    assert UNTRUNCATED in table and ORACLE in table and "top-p 0.95" in table
    assert len(table.splitlines()) == 2 + 2 + sum(1 + len(s) for s in families.values())
    matched = format_matched(rank_at_junk(curves, references, [0.5]))
    assert "top-p" in matched and "behind best" in matched
    figure = Figure()
    ax = plot_frontier(figure.add_subplot(), curves, references)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["top-p", "temperature"] and UNTRUNCATED in labels
    assert any(label.startswith("oracle") for label in labels)
    assert ax.get_yscale() == "log"


def test_the_module_draws_without_importing_matplotlib() -> None:
    # The analysis layer stays free of plotting libraries: plot_frontier only calls `ax` methods.
    tree = ast.parse(inspect.getsource(frontier))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "torch" in imported
    assert not any(name.startswith("matplotlib") for name in imported)


def test_chunked_decoding_gives_the_same_point(monkeypatch):
    from lessonlib.analysis import frontier

    steps = synthetic_steps(30, seed=8)
    whole = frontier_point(steps, {"top_p": 0.9, "temperature": 0.8})
    monkeypatch.setattr(frontier, "_CHUNK", 7)  # many chunks, the last one short
    chunked = frontier_point(steps, {"top_p": 0.9, "temperature": 0.8})
    assert torch.equal(whole.junk_by_story, chunked.junk_by_story)
    assert torch.equal(whole.lost_by_story, chunked.lost_by_story)
