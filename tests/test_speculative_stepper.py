"""The speculative decoding stepper: its pure state (rounds from lessonlib.speculative, counts,
restarts, bad input) and its view driven headless."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lessonlib.generation import generate
from lessonlib.sampling import sampling_probs
from lessonlib.speculative import expected_tokens_per_pass, residual_probs, speculative_generate
from lessonlib.tokenizer import CharTokenizer
from lessonlib.widgets.speculative import (
    BONUS_COLOR,
    KEPT_COLOR,
    REJECTED_COLOR,
    TEXT_BACKGROUNDS,
    UNJUDGED_COLOR,
    SpeculativeStepper,
)
from lessonlib.widgets.speculative_state import MAX_K, SpeculativeStepperState, initial_state
from tests.stub_models import StubModel, lively_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER = CharTokenizer("\nabcd", boundary="\n")
PROMPT = "ab"


@pytest.fixture(scope="module")
def models():
    """A target and a much different draft over TOKENIZER: random GPTs with peaked logits, whose
    end marker is rare (so that texts run for several rounds) but possible."""
    pair = lively_gpt(5, seed=0, block_size=32), lively_gpt(5, seed=1, block_size=32)
    with torch.no_grad():
        for model in pair:
            model.lm_head.bias[TOKENIZER.boundary_id] -= 5.0
    return pair


def start(models, **settings) -> SpeculativeStepperState:
    return initial_state(*models, TOKENIZER, prompt=settings.pop("prompt", PROMPT), **settings)


def stepped(state: SpeculativeStepperState, steps: int) -> SpeculativeStepperState:
    for _ in range(steps):
        state = state.step()
    return state


def seed_with_a_long_text(models, steps: int = 4, **settings) -> SpeculativeStepperState:
    """The first seed whose text does not end within `steps` rounds, stepped that far."""
    for seed in range(50):
        state = stepped(start(models, seed=seed, **settings), steps)
        if len(state.rounds) == steps and not state.finished:
            return state
    raise AssertionError("every seed ended its text early")


def ender() -> StubModel:
    """A model over TOKENIZER that always ends the text."""
    model = StubModel()
    model.vocab_size, model.block_size = 5, 32
    model.table = torch.full((5, 5), -9.0).index_fill(1, torch.tensor([0]), 9.0)
    return model


# ----- state: rounds -------------------------------------------------------------------------


def test_the_first_state_has_no_round_and_says_so(models):
    state = start(models)
    assert state.rounds == () and state.text == "" and state.context == PROMPT
    assert state.can_step and state.last_round is None and state.room == 32 - len(PROMPT)
    assert state.readout() == {
        "round": "no round yet: press step",
        "passes": "rounds: 0 \u00b7 target passes: 0 \u00b7 draft passes: 0",
        "tokens": "tokens produced: 0 \u00b7 per target pass: - (plain decoding: 1.00)",
        "acceptance": "acceptance rate: no proposal judged yet",
        "formula": "formula (1 - a^(k+1)) / (1 - a): needs an acceptance rate a",
        "status": "k = 4, \u03c4 = 1.00, seed 0",
    }


def test_a_step_returns_a_new_state_one_round_longer(models):
    state = start(models)
    after = state.step()
    assert state.rounds == () and state.text == ""  # untouched
    assert len(after.rounds) == 1 and after.rounds[0].start == 0
    record = after.rounds[0].record
    assert len(record.drafted) == 4 and 0 <= record.accepted <= 4
    assert after.token_ids == record.produced
    longer = seed_with_a_long_text(models, steps=3)
    for before, shown in zip((0, 1, 2), longer.rounds):
        assert shown.start == len(stepped(start(models, seed=longer.seed), before).text)
    assert longer.context == PROMPT + TOKENIZER.decode(longer.token_ids)


def test_each_step_is_the_librarys_round_on_the_text_so_far(models):
    """A step is speculative_generate's first round, run on the prompt and the text so far
    with the generator state the stepper holds and the stepper's settings."""
    state = seed_with_a_long_text(models, steps=3, k=3, temperature=0.7)
    generator = torch.Generator()
    generator.set_state(state.rng_state)
    expected = speculative_generate(
        *models, state.context, tokenizer=TOKENIZER, k=3, max_new_tokens=4,
        temperature=0.7, generator=generator,
    ).rounds[0]  # fmt: skip
    assert state.step().rounds[-1].record == expected


def test_the_generator_moves_on_every_round(models):
    """Each round draws fresh numbers: a stepper that reseeded every round would repeat them."""
    state = seed_with_a_long_text(models, steps=4)
    states = [stepped(start(models, seed=state.seed), n) for n in range(5)]
    rng_states = [s.rng_state for s in states]
    for before, after in itertools.pairwise(rng_states):
        assert not torch.equal(before, after)


def test_the_same_seed_builds_the_same_text(models):
    first, again = (stepped(start(models, seed=3, k=2), 6) for _ in range(2))
    assert first.same_as(again) and first.text == again.text
    assert first.rounds == again.rounds
    others = {stepped(start(models, seed=seed, k=2), 6).text for seed in range(4, 10)}
    assert len(others | {first.text}) > 1  # the seed matters


def test_greedy_stepping_writes_generates_greedy_text(models):
    """At temperature 0 the target keeps a proposal exactly when it is its argmax: the text is
    generate's greedy text, whatever the draft and k."""
    for k in (1, 3, 6):
        state = stepped(start(models, k=k, temperature=0.0, prompt="a"), 12)
        plain = generate(
            models[0], "a", tokenizer=TOKENIZER, max_new_tokens=len(state.token_ids),
            temperature=0.0,
        )  # fmt: skip
        assert state.token_ids == plain.token_ids[0] and state.text == plain.text
        assert len(state.token_ids) > 6
        for shown in state.rounds:
            for proposal in state.proposals(shown):
                assert proposal.draft_prob == 1.0
                assert proposal.keep_prob == proposal.target_prob
                assert (proposal.verdict == "kept") == (proposal.target_prob == 1.0) or (
                    proposal.verdict == "not judged"
                )


def test_proposals_show_q_p_the_keep_probability_and_the_verdicts(models):
    state = stepped(start(models, k=4, seed=1), 6)
    verdicts_seen = set()
    for shown in state.rounds:
        record, rows = shown.record, state.proposals(shown)
        verdicts = [row.verdict for row in rows]
        verdicts_seen.update(verdicts)
        # Kept ones form a prefix; after a rejection nothing is judged.
        assert verdicts[: record.accepted] == ["kept"] * record.accepted
        if record.rejected:
            assert verdicts[record.accepted] == "rejected"
            assert set(verdicts[record.accepted + 1 :]) <= {"not judged"}
        for row, token in zip(rows, record.drafted, strict=True):
            assert row.token == token and row.label == TOKENIZER.decode([token])
            assert row.keep_prob == min(1.0, row.target_prob / row.draft_prob)
    assert verdicts_seen == {"kept", "rejected", "not judged"}


def model_probs(model, text: str, temperature: float) -> torch.Tensor:
    """The model's sampling distribution after `text`, computed here from its logits."""
    ids = torch.tensor([[TOKENIZER.boundary_id, *TOKENIZER.encode(text)]])
    with torch.inference_mode():
        return sampling_probs(model(ids)[0, -1], temperature=temperature)


def test_the_targets_token_shows_its_probability_where_it_was_drawn(models):
    kinds = set()
    for seed in range(4):
        state = stepped(start(models, k=2, seed=seed, temperature=1.5), 8)
        for shown in state.rounds:
            record = shown.record
            if record.token is None:
                assert shown.token_prob is None
                continue
            before = PROMPT + TOKENIZER.decode(state.token_ids[: shown.start + record.accepted])
            p = model_probs(models[0], before, 1.5)
            if record.bonus:
                expected = float(p[record.token])
                # A bonus token other than the target's argmax: its own P, not the top one.
                kinds.add("bonus" if expected < float(p.max()) - 0.01 else "bonus, the argmax")
            else:
                residual = residual_probs(p, model_probs(models[1], before, 1.5))
                expected = float(residual[record.token])
                kinds.add("resampled")
            assert shown.token_prob > 0 and math.isclose(shown.token_prob, expected, abs_tol=1e-5)
    assert {"bonus", "resampled"} <= kinds


def test_the_readouts_add_up_the_rounds(models):
    state = stepped(start(models, k=3, seed=5), 5)
    rounds = [shown.record for shown in state.rounds]
    kept = sum(r.accepted for r in rounds)
    judged = sum(r.accepted + r.rejected for r in rounds)
    produced = sum(len(r.produced) for r in rounds)
    rate = kept / judged
    readout = state.readout()
    assert readout["passes"] == (
        f"rounds: {len(rounds)} \u00b7 target passes: {len(rounds)} \u00b7 "
        f"draft passes: {sum(len(r.drafted) for r in rounds)}"
    )
    assert readout["tokens"] == (
        f"tokens produced: {produced} \u00b7 per target pass: {produced / len(rounds):.2f} "
        "(plain decoding: 1.00)"
    )
    assert readout["acceptance"] == (
        f"acceptance rate a = {rate:.2f} ({kept} of {judged} judged proposals kept)"
    )
    assert readout["formula"].endswith(
        f"k = 3: {expected_tokens_per_pass(rate, 3):.2f} tokens per target pass"
    )
    assert readout["round"].startswith(f"round {len(rounds)}: the draft proposed ")


def test_expected_tokens_per_pass_is_the_geometric_sum():
    assert math.isclose(expected_tokens_per_pass(0.8, 4), 3.3616)
    for rate in (0.0, 0.3, 0.95):
        for k in (1, 4, 6):
            series = sum(rate**i for i in range(k + 1))  # the pass reaches position i w.p. a^i
            assert math.isclose(expected_tokens_per_pass(rate, k), series)
    assert expected_tokens_per_pass(1.0, 4) == 5.0
    with pytest.raises(ValueError, match=r"acceptance_rate must be in \[0, 1\], got nan"):
        expected_tokens_per_pass(float("nan"), 4)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        expected_tokens_per_pass(0.5, 0)


# ----- state: settings, restarts, ends, bad input ----------------------------------------------


def test_settings_and_reset_start_again_from_the_prompt_reseeded(models):
    first = start(models, seed=4)
    walked = stepped(first, 3)
    assert walked.reset().same_as(first)
    assert stepped(walked.reset(), 3).same_as(walked)  # the same rounds follow
    for changed, field, value in [
        (walked.set_k(2), "k", 2),
        (walked.set_temperature(0.5), "temperature", 0.5),
        (walked.set_prompt("ba"), "prompt", "ba"),
    ]:
        assert changed.rounds == () and getattr(changed, field) == value
        assert torch.equal(changed.rng_state, first.rng_state)
    # The same setting again changes nothing, not even the rounds.
    assert walked.set_k(4) is walked and walked.set_temperature(1.0) is walked
    assert walked.set_prompt(PROMPT) is walked


def test_the_stepper_stops_at_the_end_of_the_text(models):
    state = stepped(initial_state(ender(), ender(), TOKENIZER, prompt=PROMPT), 3)
    assert state.finished and not state.can_step and state.step() is state
    assert state.token_ids[-1] == TOKENIZER.boundary_id
    assert state.text == TOKENIZER.decode(state.token_ids[:-1])
    assert state.readout()["status"].startswith("the text has ended")


def test_the_stepper_stops_when_the_context_is_full(models):
    state = start(models, prompt="a" * 31, temperature=0.0)
    assert state.room == 1
    after = state.step()
    record = after.rounds[0].record
    # Room for the target's own token only: no proposal, and that token is the bonus.
    assert record.drafted == () and record.bonus and len(after.token_ids) == 1
    assert not after.finished and after.room == 0 and not after.can_step
    assert after.step() is after
    assert after.readout()["status"] == "the target's context is full: press reset"


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"k": 0}, ValueError, f"k must be an int in 1..{MAX_K}, got 0"),
        ({"k": MAX_K + 1}, ValueError, f"k must be an int in 1..{MAX_K}, got {MAX_K + 1}"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"temperature": -0.5}, ValueError, "temperature must be a finite number >= 0"),
        ({"temperature": "hot"}, TypeError, "temperature must be a real number"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"prompt": "az"}, ValueError, "'z' at position 1"),
        ({"prompt": "a" * 32}, ValueError, "prompt must be shorter than the target's block_size=32"),
        ({"prompt": 3}, TypeError, "prompt must be a str, got int"),
    ],
)  # fmt: skip
def test_bad_settings_raise_naming_the_parameter(models, change, error, match):
    with pytest.raises(error, match=match):
        start(models, **change)


def test_transitions_and_models_are_checked_too(models):
    state = start(models)
    with pytest.raises(ValueError, match="k must be an int in 1..6, got 9"):
        state.set_k(9)
    with pytest.raises(ValueError, match="'z' at position 0"):
        state.set_prompt("z")
    with pytest.raises(TypeError, match="draft must be a course language model, got str"):
        initial_state(models[0], "draft", TOKENIZER)
    wide = lively_gpt(6, seed=2, block_size=32)
    with pytest.raises(ValueError, match="share one vocabulary, got vocab_size 5, 6 and 5"):
        initial_state(models[0], wide, TOKENIZER)


# ----- view, headless ------------------------------------------------------------------------


def test_step_fills_the_text_the_table_and_the_readouts(models):
    stepper = SpeculativeStepper(*models, TOKENIZER, prompt=PROMPT, seed=1)
    assert stepper.round_label.value == "no round yet: press step"
    assert "No round yet" in stepper.table_html.value
    for _ in range(3):
        stepper.step_button.click()
    state = stepper.state
    assert len(state.rounds) == 3 and stepper.output.outputs == ()
    readout = state.readout()
    assert stepper.round_label.value == readout["round"] and readout["round"].startswith("round 3")
    assert stepper.passes_label.value == readout["passes"]
    assert stepper.tokens_label.value == readout["tokens"]
    assert stepper.acceptance_label.value == readout["acceptance"]
    assert stepper.formula_label.value == readout["formula"]
    table = stepper.table_html.value
    last = state.last_round.record
    # One coloured row per proposal, by verdict, and one for the target's own token.
    colors = {"kept": KEPT_COLOR, "rejected": REJECTED_COLOR, "not judged": UNJUDGED_COLOR}
    for proposal in state.proposals(state.last_round):
        assert colors[proposal.verdict] in table
    assert table.count("<tr") == 1 + len(last.drafted) + (last.token is not None)
    if last.token is not None:
        assert (BONUS_COLOR if last.bonus else REJECTED_COLOR) in table


def test_the_text_is_coloured_by_where_each_character_came_from(models):
    stepper = SpeculativeStepper(*models, TOKENIZER, prompt=PROMPT, k=3, seed=2)
    for _ in range(5):
        stepper.step_button.click()
    rounds = [shown.record for shown in stepper.state.rounds]
    end = TOKENIZER.boundary_id
    counts = {
        "kept": sum(sum(t != end for t in r.drafted[: r.accepted]) for r in rounds),
        "bonus": sum(r.bonus and r.token != end for r in rounds),
        "resampled": sum(r.rejected and r.token != end for r in rounds),
    }
    shown = stepper.text_html.value
    for origin, background in TEXT_BACKGROUNDS.items():
        assert shown.count(f"background: {background}") == counts[origin], origin
    assert sum(counts.values()) == len(stepper.state.text) > 0
    assert counts["kept"] > 0 and counts["resampled"] > 0


def test_sliders_restart_and_reset_goes_back(models):
    stepper = SpeculativeStepper(*models, TOKENIZER, prompt=PROMPT)
    stepper.step_button.click()
    stepper.k_slider.value = 2
    assert stepper.state.k == 2 and stepper.state.rounds == ()
    stepper.step_button.click()
    stepper.temperature_slider.value = 0.3000000000000001  # as a browser slider reports it
    assert stepper.state.temperature == 0.3 and stepper.state.rounds == ()
    stepper.step_button.click()
    first = stepper.state
    stepper.step_button.click()
    stepper.reset_button.click()
    assert stepper.state.rounds == () and stepper.round_label.value == "no round yet: press step"
    stepper.step_button.click()
    assert stepper.state.same_as(first)  # the same seed: the same first round
    assert stepper.output.outputs == ()


def test_a_bad_prompt_shows_a_line_of_text_and_keeps_the_state(models):
    stepper = SpeculativeStepper(*models, TOKENIZER, prompt=PROMPT)
    stepper.step_button.click()
    before = stepper.state
    stepper.prompt_box.value = "abz"
    assert stepper.state is before
    assert (
        "not applied" in stepper.error_label.value and "&#x27;z&#x27;" in stepper.error_label.value
    )
    assert "Traceback" not in stepper.error_label.value and stepper.output.outputs == ()
    stepper.prompt_box.value = "ba"
    assert stepper.error_label.value == "" and stepper.state.prompt == "ba"
    assert stepper.state.rounds == ()


def test_the_step_button_is_disabled_once_the_text_ends(models):
    stepper = SpeculativeStepper(ender(), ender(), TOKENIZER, prompt=PROMPT)
    for _ in range(12):
        if stepper.step_button.disabled:
            break
        stepper.step_button.click()
    assert stepper.state.finished and stepper.step_button.disabled
    assert "(the end)" in stepper.text_html.value
    assert stepper.status_label.value.startswith("the text has ended")


def test_the_view_refuses_a_temperature_off_its_slider(models):
    with pytest.raises(ValueError, match="temperature must be on its slider's grid"):
        SpeculativeStepper(*models, TOKENIZER, prompt=PROMPT, temperature=0.33)


def test_view_shows_as_its_widget(models):
    stepper = SpeculativeStepper(*models, TOKENIZER, prompt=PROMPT)
    bundle = stepper._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert stepper.output.outputs == ()
