"""Tests for lessonlib.tinytales: sampling, exact scoring, prefix distributions, greedy loops."""

from __future__ import annotations

import math
import random
import re

import pytest

from lessonlib import tinytales as tt

# sha256 of corpus_text(generate_stories(200, seed=0)), computed once and pinned: it guards the
# corpus (and so the trained model and every lesson that quotes it) against silent changes of
# the grammar, the word weights or the random stream across Python versions and platforms.
PINNED_SHA256_200_SEED0 = "f259226dab360e366d37d4d48922bbd6dabb873036c22f49058eee76c5cdf566"

# A story written by hand, with the probability of each of its choices (design values of the
# grammar): opening "once", trait, hero, trait, animal, look, thing, place, friend, greeting
# "hello", middle "stock", end the middle, ending "friends".
HAND_STORY = (
    "Once upon a time, there was a little kid named Mia. Mia had a happy dog and a red ball. "
    "One day, Mia and the dog went to the park and met Tom. Tom said, 'Hello, Mia! I like "
    "your dog.' Mia played with the ball. In the end, Mia and Tom were the best of friends."
)


@pytest.fixture(scope="module")
def stories() -> list[str]:
    """A fixed sample of 20,000 stories."""
    return tt.generate_stories(20_000, seed=7)


def _hero(story: str) -> str:
    """The hero's name: the word after 'named'."""
    return re.search(r"named (\w+)\.", story).group(1)


def _continuation_prob(prefix: str, text: str) -> float:
    """P(the story goes on with `text` | `prefix`), by the chain rule over next_char_distribution."""
    prob = 1.0
    for i, char in enumerate(text):
        try:
            prob *= tt.next_char_distribution(prefix + text[:i]).get(char, 0.0)
        except ValueError:
            return 0.0
        if prob == 0.0:
            return 0.0
    return prob


def test_pinned_corpus_sha256() -> None:
    assert tt.corpus_sha256(tt.generate_stories(200, seed=0)) == PINNED_SHA256_200_SEED0


def test_same_seed_same_stories_other_seed_other_stories() -> None:
    assert tt.generate_stories(50, seed=3) == tt.generate_stories(50, seed=3)
    assert tt.generate_stories(50, seed=3) != tt.generate_stories(50, seed=4)
    rng = random.Random(3)
    assert [tt.generate_story(rng) for _ in range(50)] == tt.generate_stories(50, seed=3)


def test_corpus_text_puts_end_after_every_story() -> None:
    assert tt.corpus_text(["ab", "c"]) == "ab\nc\n"
    assert tt.END == "\n"
    with pytest.raises(ValueError, match=r"stories\[1\]"):
        tt.corpus_text(["ab", "c\nd"])


def test_generated_stories_are_valid(stories: list[str]) -> None:
    assert all(tt.is_valid_story(story) for story in stories[:1000])


def test_lengths_alphabet_and_single_lines(stories: list[str]) -> None:
    lengths = [len(story) for story in stories]
    in_band = sum(250 <= n <= 400 for n in lengths[:2000]) / 2000
    assert in_band >= 0.90
    assert sum(n > 500 for n in lengths) / len(lengths) < 0.01
    assert all(tt.END not in story for story in stories)
    used = set("".join(stories))
    assert used <= set(tt.ALPHABET)
    # ALPHABET is tight: every character but END occurs in the sample.
    assert used | {tt.END} == set(tt.ALPHABET)
    assert tt.ALPHABET == "".join(sorted(set(tt.ALPHABET)))
    assert not any(char.isdigit() for char in tt.ALPHABET)


def test_word_lists_are_long_tailed_and_prefix_free() -> None:
    counts = {kind: len(words) for kind, words in tt.WORDS.items()}
    assert sum(counts.values()) >= 100
    assert counts["names"] >= 25 and counts["animals"] >= 15 and counts["things"] >= 15
    for kind, words in tt.WORDS.items():
        assert len(set(words)) == len(words), kind
        assert set("".join(words)) <= set(tt.ALPHABET), kind
        # No word is a prefix of another of its list: keeps each derivation unique.
        for a in words:
            assert not any(b != a and b.startswith(a) for b in words), (kind, a)
        probs = list(tt.word_probs(kind).values())
        assert math.isclose(sum(probs), 1.0)
        # Zipf: the r-th word is r**s times less likely than the first.
        for rank, p in enumerate(probs, start=1):
            assert math.isclose(probs[0] / p, rank**tt.ZIPF_EXPONENT, rel_tol=1e-12)
    # Adjectives follow "a", so they must start with a consonant.
    assert all(word[0] not in "aeiou" for word in tt.WORDS["traits"] + tt.WORDS["looks"])


def test_story_log_prob_of_a_hand_written_story() -> None:
    names = tt.word_probs("names")
    friend = names["Tom"] / (1.0 - names["Mia"])
    expected = (
        math.log(0.6)
        + math.log(tt.word_probs("traits")["little"])
        + math.log(names["Mia"])
        + math.log(tt.word_probs("traits")["happy"])
        + math.log(tt.word_probs("animals")["dog"])
        + math.log(tt.word_probs("looks")["red"])
        + math.log(tt.word_probs("things")["ball"])
        + math.log(tt.word_probs("places")["park"])
        + math.log(friend)
        + math.log(0.6)
        + math.log(0.4)
        + math.log(1.0 - tt.CONTINUE_PROB)
        + math.log(0.5)
    )
    assert tt.story_log_prob(HAND_STORY) == pytest.approx(expected, abs=1e-12)


def test_every_story_has_one_derivation(stories: list[str]) -> None:
    assert all(len(tt._derivation_log_probs(story)) == 1 for story in stories[:300])


def _later_mention_swapped(story: str) -> str:
    """`story` with the hero's name in the ending replaced by another name."""
    hero = _hero(story)
    other = next(name for name in tt.WORDS["names"] if name not in story)
    head, _, tail = story.rpartition(f" {hero} ")
    return f"{head} {other} {tail}"


def _met_self(story: str) -> str:
    """`story` with the friend replaced by the hero everywhere."""
    friend = re.search(r" met (\w+)\.", story).group(1)
    return re.sub(rf"\b{friend}\b", _hero(story), story)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(HAND_STORY[:-1], id="truncated-last-char"),
        pytest.param(HAND_STORY[: HAND_STORY.index(" In the end")], id="no-ending"),
        pytest.param(HAND_STORY[:150], id="truncated-mid-sentence"),
        pytest.param(HAND_STORY.replace("park", "pork"), id="changed-letter"),
        pytest.param(HAND_STORY.replace("Mia played", "Max played"), id="swapped-name"),
        pytest.param(_later_mention_swapped(HAND_STORY), id="swapped-name-in-ending"),
        pytest.param(_met_self(HAND_STORY), id="met-self"),
        pytest.param(HAND_STORY + " ", id="trailing-space"),
        pytest.param(" " + HAND_STORY, id="leading-space"),
        pytest.param(HAND_STORY.replace(". Mia", ".  Mia"), id="double-space"),
        pytest.param(HAND_STORY + tt.END, id="with-end-marker"),
        pytest.param(HAND_STORY + " " + HAND_STORY, id="two-stories"),
        pytest.param("", id="empty"),
    ],
)
def test_invalid_stories_are_rejected(broken: str) -> None:
    assert tt.is_valid_story(HAND_STORY)
    assert not tt.is_valid_story(broken)
    assert tt.story_log_prob(broken) == -math.inf


def test_invalid_sampled_stories_are_rejected(stories: list[str]) -> None:
    for story in stories[:20]:
        assert not tt.is_valid_story(_later_mention_swapped(story))
        assert not tt.is_valid_story(_met_self(story))
        assert not tt.is_valid_story(story.replace(" the ", " a ", 1))


def test_chain_rule_matches_story_log_prob(stories: list[str]) -> None:
    for story in stories[:6]:
        chained = sum(
            math.log(tt.next_char_distribution(story[:i])[story[i]]) for i in range(len(story))
        )
        chained += math.log(tt.next_char_distribution(story)[tt.END])
        assert chained == pytest.approx(tt.story_log_prob(story), abs=1e-9)


def test_next_char_distributions_agree_with_one_at_a_time(stories: list[str]) -> None:
    story = stories[1]
    all_at_once = tt.next_char_distributions(story)
    assert len(all_at_once) == len(story) + 1
    for i in range(0, len(story) + 1, 7):
        single = tt.next_char_distribution(story[:i])
        assert single.keys() == all_at_once[i].keys()
        for char, p in single.items():
            assert p == pytest.approx(all_at_once[i][char], abs=1e-12)


@pytest.mark.parametrize(
    "prefix",
    ["", "Once upon a ", "Long ago, in a quiet town, there lived a ", HAND_STORY[:200], HAND_STORY],
)
def test_distribution_sums_to_one(prefix: str) -> None:
    dist = tt.next_char_distribution(prefix)
    assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-12)
    assert all(p > 0 for p in dist.values())
    assert set(dist) <= set(tt.ALPHABET)
    assert list(dist.values()) == sorted(dist.values(), reverse=True)


def _assert_frequencies_match(next_chars: list[str], predicted: list[dict[str, float]]) -> None:
    """Observed next characters agree with the mean predicted probabilities within 4 std errors."""
    n = len(next_chars)
    assert n >= 500, "too few samples for a meaningful comparison"
    for char, dist in zip(next_chars, predicted):
        assert char in dist  # nothing happens that the grammar calls impossible
    for char in {c for dist in predicted for c in dist}:
        expected = sum(dist.get(char, 0.0) for dist in predicted) / n
        observed = next_chars.count(char) / n
        # The indicator minus its predicted probability has mean 0 and variance at most
        # expected * (1 - expected), whether the prefixes are equal or not.
        std_error = math.sqrt(expected * (1.0 - expected) / n)
        assert abs(observed - expected) <= 4 * std_error + 1e-12, (char, observed, expected)


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "Once upon a time, there was a ",
        "Once upon a time, there was a little kid named ",
        "Long ago, in a quiet town, there lived a happy kid named ",
    ],
)
def test_distribution_matches_sampling_at_fixed_prefix(stories: list[str], prefix: str) -> None:
    next_chars = [story[len(prefix)] for story in stories if story.startswith(prefix)]
    predicted = [tt.next_char_distribution(prefix)] * len(next_chars)
    _assert_frequencies_match(next_chars, predicted)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda story: story.index(" met ") + 5, id="friend-after-met"),
        pytest.param(lambda story: story.index("' ") + 2, id="first-middle-sentence"),
        pytest.param(lambda story: story.index(".", story.index("' ") + 2) + 2, id="go-on-or-end"),
        pytest.param(lambda story: story.index(" had a ") + 7, id="after-hero-is-set"),
    ],
)
def test_distribution_matches_sampling_at_story_dependent_cuts(stories: list[str], cut) -> None:
    # Each story is cut at its own prefix, so compare with the mean of the exact distributions.
    sample = stories[:3000]
    positions = [cut(story) for story in sample]
    next_chars = [story[pos] for story, pos in zip(sample, positions)]
    predicted = [tt.next_char_distribution(story[:pos]) for story, pos in zip(sample, positions)]
    _assert_frequencies_match(next_chars, predicted)


def test_friend_is_never_the_hero() -> None:
    prefix = HAND_STORY[: HAND_STORY.index(" met ") + 5]
    names = tt.word_probs("names")
    assert _continuation_prob(prefix, "Mia.") == 0.0
    for friend in ["Tom", "Lily", "Max", "Grace"]:
        expected = names[friend] / (1.0 - names["Mia"])
        assert _continuation_prob(prefix, friend + ".") == pytest.approx(expected, rel=1e-9)
    # After "M" only Max is left: the hero Mia cannot be the friend.
    dist = tt.next_char_distribution(prefix + "M")
    assert dist == {"a": pytest.approx(1.0)}


def test_hero_animal_and_thing_recur() -> None:
    after_hero = "Once upon a time, there was a little kid named Ruby. "
    assert tt.next_char_distribution(after_hero) == {"R": 1.0}
    assert _continuation_prob(after_hero, "Ruby had a ") == pytest.approx(1.0)
    frame = after_hero + "Ruby had a shy owl and a pink kite. One day, "
    assert _continuation_prob(frame, "Ruby and the owl went to the ") == pytest.approx(1.0)
    assert _continuation_prob(frame, "Ruby and the cat") == 0.0
    middle = frame + "Ruby and the owl went to the zoo and met Eli. Eli said, 'Hi, Ruby! What a "
    assert _continuation_prob(middle, "red kite!'") == pytest.approx(tt.word_probs("looks")["red"])
    assert _continuation_prob(middle, "red ball!'") == 0.0
    assert tt.next_char_distribution(middle + "red kite!' Ruby ")["p"] > 0.5


def test_greedy_decoding_loops_forever() -> None:
    text = tt.greedy_story(900)
    assert tt.END not in text and len(text) == 900
    hero = _hero(text)
    thing = re.search(rf"{hero} had a \w+ \w+ and a \w+ (\w+)\.", text).group(1)
    loop = " " + tt.loop_sentence(hero, thing)
    assert loop.startswith(f" {hero} ")
    complete = text[: text.rindex(".") + 1]
    assert complete.endswith(loop * 3)
    # Periodic tail: the last 600 characters repeat with the loop's period.
    period = len(loop)
    assert text[-600:] == text[-600 - period : -period]


@pytest.mark.parametrize("hero", tt.WORDS["names"])
@pytest.mark.parametrize("friend", ["Grace", "Tom"])
def test_greedy_loop_holds_for_every_hero(hero: str, friend: str) -> None:
    # A friend whose name starts with T is the closest case: "T" then also collects the
    # friend's sentences, "The ..." and "That night" (0.333 against the hero's 0.352).
    if friend == hero:
        friend = "Tim" if hero == "Tom" else "Mia"
    prompt = (
        f"Once upon a time, there was a little kid named {hero}. {hero} had a happy cat and a "
        f"blue kite. One day, {hero} and the cat went to the beach and met {friend}. {friend} "
        f"said, 'Hello, {hero}! I like your cat.'"
    )
    text = tt.greedy_story(len(prompt) + 200, prompt=prompt)
    assert text.startswith(prompt) and tt.END not in text
    assert (" " + tt.loop_sentence(hero, "kite")) * 4 in text[len(prompt) :]


def test_greedy_story_reaches_end_when_the_prompt_forces_it() -> None:
    prompt = HAND_STORY[:-3]
    assert tt.greedy_story(len(HAND_STORY) + 50, prompt=prompt) == HAND_STORY + tt.END


def test_entropy_rate_is_in_band(stories: list[str]) -> None:
    rate = tt.entropy_rate(stories[:2000])
    assert 0.08 < rate < 0.14
    total = sum(-tt.story_log_prob(story) for story in stories[:10])
    assert tt.entropy_rate(stories[:10]) == pytest.approx(
        total / sum(len(story) + 1 for story in stories[:10])
    )


@pytest.mark.parametrize(
    "prefix",
    ["x", "Once upon a tame", "Once\n", HAND_STORY + " ", HAND_STORY.replace("Tom", "Mia", 1)],
)
def test_impossible_prefix_raises(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        tt.next_char_distribution(prefix)


def test_impossible_prefix_message_names_the_position() -> None:
    with pytest.raises(ValueError, match=r"'a' at position 13"):
        tt.next_char_distribution("Once upon a tame")
    with pytest.raises(ValueError, match=r"\.\.\."):  # a long prefix is shown shortened
        tt.next_char_distribution(HAND_STORY + "!")


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError, match="prefix"):
        tt.next_char_distribution(None)
    with pytest.raises(TypeError, match="text"):
        tt.story_log_prob(b"Once")
    with pytest.raises(TypeError, match="rng"):
        tt.generate_story(7)
    with pytest.raises(ValueError, match="n must be an int >= 0, got -1"):
        tt.generate_stories(-1, seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        tt.generate_stories(1, seed=1.5)
    with pytest.raises(ValueError, match="max_chars must be an int >= 0, got -5"):
        tt.greedy_story(-5)
    with pytest.raises(ValueError, match="prompt 'Once upon a tame'"):
        tt.greedy_story(50, prompt="Once upon a tame")
    with pytest.raises(ValueError, match="kind"):
        tt.word_probs("colours")
    with pytest.raises(ValueError, match="empty"):
        tt.entropy_rate([])
    with pytest.raises(ValueError, match=r"stories\[1\]"):
        tt.entropy_rate([HAND_STORY, HAND_STORY + "!"])
    with pytest.raises(ValueError, match="position"):
        tt.next_char_distributions("Once upon a tame")


def test_next_char_vector_aligns_with_an_alphabet():
    prefix = "Once upon a time, there was a little "
    vector = tt.next_char_vector(prefix, tt.ALPHABET)
    distribution = tt.next_char_distribution(prefix)
    assert len(vector) == len(tt.ALPHABET)
    assert math.isclose(sum(vector), 1.0)
    for char, prob in zip(tt.ALPHABET, vector):
        assert prob == distribution.get(char, 0.0)
    with pytest.raises(ValueError, match="missing"):
        tt.next_char_vector(prefix, "abc")


def test_longest_possible_prefix_stops_at_the_first_impossible_character():
    story = tt.generate_stories(1, seed=3)[0]
    assert tt.longest_possible_prefix(story) == len(story)
    assert tt.longest_possible_prefix(story[:40] + "#" + story[41:]) == 40
    assert tt.longest_possible_prefix("Once" + tt.END + "upon") == 4
    assert tt.longest_possible_prefix("") == 0
    with pytest.raises(TypeError, match="text must be a str"):
        tt.longest_possible_prefix(None)
