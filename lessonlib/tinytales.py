"""TinyTales: the course's probabilistic story grammar, with exact probabilities.

The training data of the course GPT and the ground truth lessons put beside it: for any story
prefix the exact distribution of the next character is known. Deliberately simplified: no
pronouns, no article but "a", no digits, one line per story; no models or tensors here.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from lessonlib.validation import check_int

END = "\n"
"""Marks the end of a story in the corpus (and its beginning, in a model's context)."""

# Every character a story can contain, plus END, sorted: the tokenizer's vocabulary. Tests check
# that generated stories use nothing else and that every character here occurs in a sample.
ALPHABET = "\n !',.ABDEFGHIJKLMNORSTWZabcdefghiklmnopqrstuvwxyz"

CONTINUE_PROB = 0.55
"""Probability of another middle sentence after each one (else the story goes to its ending)."""

ZIPF_EXPONENT = 1.0
"""The r-th entry of a word list has weight 1 / r**ZIPF_EXPONENT (exact for 1.0)."""

LOOP_SENTENCE = "{hero} played with the {thing}."
"""The stock middle sentence (a template): likely enough that greedy decoding repeats it forever."""

# Word lists in rank order: the first entry is the most likely. No entry of a list is a prefix of
# another entry of the same list, which keeps every story's derivation unique; every word that
# can follow "a" starts with a consonant.
WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "names": (
        "Mia", "Tom", "Lily", "Max", "Ben", "Anna", "Sam", "Lucy", "Leo", "Emma",
        "Jack", "Zoe", "Tim", "Sara", "Finn", "Ella", "Noah", "Ruby", "Owen", "Kate",
        "Luke", "Nora", "Jake", "Ivy", "Adam", "Rose", "Dan", "Amy", "Eli", "Grace",
    ),
    "animals": (
        "dog", "cat", "bird", "rabbit", "duck", "frog", "fish", "horse", "mouse", "bear",
        "fox", "owl", "pig", "cow", "goat", "lamb", "turtle", "bee", "hen", "snail",
    ),
    "things": (
        "ball", "kite", "book", "hat", "drum", "box", "cup", "boat", "doll", "bike",
        "bell", "sock", "rock", "shell", "spoon", "key", "train", "car", "lamp", "coat",
    ),
    "places": (
        "park", "garden", "forest", "beach", "farm", "lake", "river", "hill", "school",
        "market", "zoo", "woods", "pond", "field", "town",
    ),
    # Adjectives for kids and animals.
    "traits": (
        "little", "happy", "brave", "kind", "shy", "funny", "silly", "sleepy", "curious",
        "clever", "gentle", "quiet", "proud", "lucky",
    ),
    # Adjectives for things.
    "looks": (
        "red", "big", "blue", "shiny", "small", "green", "new", "yellow", "soft", "round",
        "pink", "tiny",
    ),
    "verbs": (
        "liked", "found", "took", "held", "wanted", "shared", "carried", "fixed", "washed",
        "painted", "dropped", "lost", "hid", "threw", "kicked",
    ),
})  # fmt: skip


class _Choice(NamedTuple):
    """A weighted choice point of the grammar; `emits` means the chosen option is said as text."""

    options: tuple[str, ...]
    cumulative: tuple[float, ...]  # running sums of the weights; the last one is the total
    log_probs: tuple[float, ...]
    emits: bool


def _make_choice(options: Sequence[str], weights: Sequence[float], *, emits: bool) -> _Choice:
    """A choice point over `options` with probabilities proportional to positive `weights`."""
    if len(options) != len(weights) or not options:
        raise ValueError(
            f"options and weights must be non-empty and of equal length, got {len(options)} "
            f"options and {len(weights)} weights"
        )
    if any(not w > 0 for w in weights):
        raise ValueError(f"weights must all be positive, got {list(weights)}")
    cumulative = tuple(itertools.accumulate(float(w) for w in weights))
    total = cumulative[-1]
    log_probs = tuple(math.log(w / total) for w in weights)
    return _Choice(tuple(options), cumulative, log_probs, emits)


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> tuple[float, ...]:
    """Weights 1 / r**exponent for ranks r = 1..n."""
    return tuple(1.0 / rank**exponent for rank in range(1, n + 1))


def word_probs(kind: str) -> dict[str, float]:
    """The probability of every word of the list `kind` (a key of WORDS), in rank order."""
    if kind not in WORDS:
        raise ValueError(f"kind must be one of {sorted(WORDS)}, got {kind!r}")
    choice = _WORD_CHOICES[kind]
    return {word: math.exp(lp) for word, lp in zip(choice.options, choice.log_probs)}


def loop_sentence(hero: str, thing: str) -> str:
    """The stock sentence for a hero and their thing, e.g. 'Mia played with the ball.'."""
    return LOOP_SENTENCE.format(hero=hero, thing=thing)


_WORD_CHOICES = {
    kind: _make_choice(words, zipf_weights(len(words)), emits=True) for kind, words in WORDS.items()
}
_NAMES = _WORD_CHOICES["names"]
_ANIMALS = _WORD_CHOICES["animals"]
_THINGS = _WORD_CHOICES["things"]
_PLACES = _WORD_CHOICES["places"]
_TRAITS = _WORD_CHOICES["traits"]
_LOOKS = _WORD_CHOICES["looks"]
_VERBS = _WORD_CHOICES["verbs"]

# The friend is any name but the hero's, with the remaining Zipf weights renormalised.
_FRIENDS = {
    hero: _make_choice(
        [name for name in WORDS["names"] if name != hero],
        [w for name, w in zip(WORDS["names"], zipf_weights(len(WORDS["names"]))) if name != hero],
        emits=True,
    )
    for hero in WORDS["names"]
}

# Template choices: the options are labels that the grammar branches on, not text.
_OPENINGS = _make_choice(["once", "long"], [0.6, 0.4], emits=False)
_GREETINGS = _make_choice(["hello", "hi"], [0.6, 0.4], emits=False)
# The stock sentence and two more start with the hero's name. At a sentence boundary their first
# letter gets CONTINUE_PROB * 0.64 = 0.352, more than any other letter can (at most 0.333, for
# "The ...", "That night" and a friend whose name starts with T), and the stock sentence alone
# outweighs the other two; so greedy decoding picks it character by character, for every hero.
_MIDDLES = _make_choice(
    ["stock", "run", "found", "verb", "animal"], [0.4, 0.12, 0.12, 0.18, 0.18], emits=False
)
_GO_ON = _make_choice(["more", "end"], [CONTINUE_PROB, 1.0 - CONTINUE_PROB], emits=False)
_ENDINGS = _make_choice(["friends", "night", "home"], [0.5, 0.3, 0.2], emits=False)

_Item = str | _Choice


# The grammar is written once, as generators that yield literal text or a _Choice and receive
# the chosen option back. Three drivers read it: `generate_story` answers each _Choice with a
# weighted draw; `story_log_prob` searches depth-first over choice sequences, dropping a branch
# once its text disagrees with the story; `next_char_distribution` advances every derivation
# that agrees with the prefix character by character. Python generators cannot be copied, so a
# branch resumes by replaying the grammar with the same choices (`_replay`): it is a pure
# function of its choices, so this is exact.
#
# A story is one line: an opening that names the hero, their animal and thing and the friend they
# meet; a middle of one sentence, then another with probability CONTINUE_PROB, and so on; an
# ending. For example:
#
#   Once upon a time, there was a little kid named Mia. Mia had a happy dog and a red ball.
#   One day, Mia and the dog went to the park and met Tom. Tom said, 'Hello, Mia! I like your
#   dog.' Mia played with the ball. The dog was very brave. In the end, Mia and Tom were the
#   best of friends.
#
# The stock middle sentence (LOOP_SENTENCE) is so likely that greedy decoding repeats it forever.


def _grammar() -> Generator[_Item, str | None, None]:
    """The TinyTales grammar: yields text or a _Choice and receives the chosen option back."""
    hero, friend, animal, thing = yield from _opening()
    while True:
        yield from _middle_sentence(hero, friend, animal, thing)
        if (yield _GO_ON) == "end":
            break
    ending = yield _ENDINGS
    if ending == "friends":
        yield f" In the end, {hero} and {friend} were the best of friends."
    elif ending == "night":
        yield f" That night, {hero} hugged the {animal} and went to sleep."
    else:
        yield f" At last, {hero} and the {animal} went home with the {thing}."


def _opening() -> Generator[_Item, str | None, tuple[str, str, str, str]]:
    """From 'Once upon a time' to the friend's greeting; returns (hero, friend, animal, thing)."""
    if (yield _OPENINGS) == "once":
        yield "Once upon a time, there was a "
    else:
        yield "Long ago, in a quiet town, there lived a "
    yield _TRAITS
    yield " kid named "
    hero = yield _NAMES
    yield f". {hero} had a "
    yield _TRAITS
    yield " "
    animal = yield _ANIMALS
    yield " and a "
    yield _LOOKS
    yield " "
    thing = yield _THINGS
    yield f". One day, {hero} and the {animal} went to the "
    yield _PLACES
    yield " and met "
    friend = yield _FRIENDS[hero]
    if (yield _GREETINGS) == "hello":
        yield f". {friend} said, 'Hello, {hero}! I like your {animal}.'"
    else:
        yield f". {friend} said, 'Hi, {hero}! What a "
        yield _LOOKS
        yield f" {thing}!'"
    return hero, friend, animal, thing


def _middle_sentence(
    hero: str, friend: str, animal: str, thing: str
) -> Generator[_Item, str | None, None]:
    """One sentence of the story's middle."""
    middle = yield _MIDDLES
    if middle == "stock":
        yield " " + loop_sentence(hero, thing)
    elif middle == "run":
        yield f" {hero} and {friend} ran to the "
        yield _PLACES
        yield "."
    elif middle == "found":
        yield f" {hero} found a "
        yield _LOOKS
        yield " "
        yield _THINGS
        yield "."
    elif middle == "verb":
        yield f" {friend} "
        yield _VERBS
        yield f" the {thing}."
    else:
        yield f" The {animal} was very "
        yield _TRAITS
        yield "."


def _advance(gen: Generator[_Item, str | None, None], reply: str | None) -> _Item | None:
    """The grammar's next item after sending `reply`; None once the story has ended."""
    try:
        return gen.send(reply)
    except StopIteration:
        return None


def _replay(
    choices: Sequence[str],
) -> tuple[Generator[_Item, str | None, None], _Item | None]:
    """A fresh grammar run that has made `choices`, and the item it yields next."""
    gen = _grammar()
    item = next(gen)
    for option in choices:
        while not isinstance(item, _Choice):
            item = _advance(gen, None)
        item = _advance(gen, option)
    return gen, item


def _sample(choice: _Choice, rng: random.Random) -> str:
    """One option of `choice`, drawn with a single rng.random() and a bisect."""
    u = rng.random()
    return choice.options[bisect.bisect_right(choice.cumulative, u * choice.cumulative[-1])]


def generate_story(rng: random.Random) -> str:
    """One story (without END), drawn from the grammar with `rng`."""
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be a random.Random, got {type(rng).__name__}")
    parts = []
    gen = _grammar()
    item = next(gen)
    while item is not None:
        if isinstance(item, _Choice):
            option = _sample(item, rng)
            if item.emits:
                parts.append(option)
            item = _advance(gen, option)
        else:
            parts.append(item)
            item = _advance(gen, None)
    return "".join(parts)


def generate_stories(n: int, *, seed: int) -> list[str]:
    """`n` stories drawn from one random.Random(seed)."""
    n = check_int("n", n, low=0)
    seed = check_int("seed", seed)
    rng = random.Random(seed)
    return [generate_story(rng) for _ in range(n)]


def corpus_text(stories: Sequence[str]) -> str:
    """The corpus: every story followed by END."""
    for index, story in enumerate(stories):
        if END in story:
            raise ValueError(f"stories[{index}] contains END {END!r}: {_shorten(story)!r}")
    return "".join(story + END for story in stories)


def corpus_sha256(stories: Sequence[str]) -> str:
    """The sha256 hex digest of corpus_text(stories) encoded as UTF-8."""
    return hashlib.sha256(corpus_text(stories).encode("utf-8")).hexdigest()


def _logsumexp(log_values: Sequence[float]) -> float:
    """log(sum(exp(v))) without underflow; -inf for no values."""
    if not log_values:
        return -math.inf
    top = max(log_values)
    return top + math.log(math.fsum(math.exp(v - top) for v in log_values))


def _shorten(text: str, keep: int = 30) -> str:
    """`text`, or its first and last `keep` characters around '...' when it is long."""
    return text if len(text) <= 2 * keep + 3 else text[:keep] + "..." + text[-keep:]


def _derivation_log_probs(text: str) -> list[float]:
    """Log-probability of every derivation that says exactly `text` and then ends."""
    found = []
    pending: list[tuple[tuple[str, ...], int, float]] = [((), 0, 0.0)]
    while pending:
        choices, pos, log_prob = pending.pop()
        gen, item = _replay(choices)
        while True:
            if item is None:
                if pos == len(text):
                    found.append(log_prob)
                break
            if isinstance(item, str):
                if not text.startswith(item, pos):
                    break
                pos += len(item)
                item = _advance(gen, None)
                continue
            # A word is said at once, so only words that match the text here survive.
            survivors = [
                (option, pos + len(option) if item.emits else pos, log_prob + lp)
                for option, lp in zip(item.options, item.log_probs)
                if not item.emits or text.startswith(option, pos)
            ]
            if not survivors:
                break
            for option, new_pos, new_log_prob in survivors[1:]:
                pending.append((choices + (option,), new_pos, new_log_prob))
            option, pos, log_prob = survivors[0]
            choices += (option,)
            item = _advance(gen, option)
    return found


def story_log_prob(text: str) -> float:
    """Exact natural-log probability of the complete story `text` (END included); -inf if invalid."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if END in text:
        return -math.inf
    return _logsumexp(_derivation_log_probs(text))


def is_valid_story(text: str) -> bool:
    """True iff `text` (without END) is a complete story the grammar can produce."""
    return story_log_prob(text) > -math.inf


@dataclass(slots=True)
class _Path:
    """One derivation that agrees with the prefix so far, stopped before its next character."""

    choices: tuple[str, ...]
    log_prob: float
    pending: str  # text it has said that the prefix has not reached yet; END once it has ended
    gen: Generator[_Item, str | None, None] | None  # None: resume by replaying `choices`
    reply: str | None  # what to send `gen` when resuming it


def _settle(
    gen: Generator[_Item, str | None, None] | None,
    item: _Item | None,
    choices: tuple[str, ...],
    log_prob: float,
) -> list[_Path]:
    """Every path from one grammar state, each run on until it has something to say."""
    paths = []
    stack = [(gen, item, choices, log_prob)]
    while stack:
        gen, item, choices, log_prob = stack.pop()
        if gen is None:
            gen, item = _replay(choices)
        while item == "":  # an empty literal says nothing; look past it
            item = _advance(gen, None)
        if item is None:
            paths.append(_Path(choices, log_prob, END, None, None))
        elif isinstance(item, str):
            paths.append(_Path(choices, log_prob, item, gen, None))
        elif item.emits:
            words = [
                _Path(choices + (option,), log_prob + lp, option, None, option)
                for option, lp in zip(item.options, item.log_probs)
            ]
            # One word may keep the live generator; the others replay if they survive.
            words[0].gen = gen
            paths.extend(words)
        else:
            for option, lp in zip(item.options[1:], item.log_probs[1:]):
                stack.append((None, None, choices + (option,), log_prob + lp))
            first = item.options[0]
            stack.append(
                (gen, _advance(gen, first), choices + (first,), log_prob + item.log_probs[0])
            )
    return paths


class _Frontier:
    """All derivations that agree with a growing prefix, grouped by the character each says next."""

    def __init__(self) -> None:
        gen, item = _replay(())
        self.paths = _settle(gen, item, (), 0.0)

    def feed(self, char: str) -> None:
        """Extend the prefix by `char`, dropping the derivations that say something else."""
        advanced = []
        for path in self.paths:
            if path.pending[0] != char:
                continue
            if len(path.pending) > 1:
                path.pending = path.pending[1:]
                advanced.append(path)
                continue
            if path.gen is None:
                gen, item = _replay(path.choices)
            else:
                gen, item = path.gen, _advance(path.gen, path.reply)
            advanced.extend(_settle(gen, item, path.choices, path.log_prob))
        self.paths = advanced

    def distribution(self) -> dict[str, float]:
        """Probability of each next character given the prefix, most likely first."""
        groups: dict[str, list[float]] = {}
        for path in self.paths:
            groups.setdefault(path.pending[0], []).append(path.log_prob)
        log_masses = {char: _logsumexp(values) for char, values in groups.items()}
        log_total = _logsumexp(list(log_masses.values()))
        ranked = sorted(log_masses.items(), key=lambda item: (-item[1], item[0]))
        return {char: math.exp(lm - log_total) for char, lm in ranked}


def _frontier_after(prefix: str, *, name: str = "prefix") -> _Frontier:
    """The frontier after `prefix`; ValueError naming the first impossible character."""
    if not isinstance(prefix, str):
        raise TypeError(f"{name} must be a str, got {type(prefix).__name__}")
    frontier = _Frontier()
    for position, char in enumerate(prefix):
        if char == END:
            # END never occurs inside a story, so a prefix that contains it is impossible.
            frontier.paths = []
        else:
            frontier.feed(char)
        if not frontier.paths:
            raise ValueError(
                f"{name} {_shorten(prefix)!r} is impossible under the TinyTales grammar: no story "
                f"has {char!r} at position {position} after {_shorten(prefix[:position])!r}"
            )
    return frontier


def longest_possible_prefix(text: str) -> int:
    """Length of the longest prefix of `text` that some TinyTales story starts with."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    frontier = _Frontier()
    for position, char in enumerate(text):
        if char == END:
            return position  # END never occurs inside a story
        frontier.feed(char)
        if not frontier.paths:
            return position
    return len(text)


def next_char_distribution(prefix: str) -> dict[str, float]:
    """Exact distribution of the character after the story prefix `prefix` (END: it ends there)."""
    return _frontier_after(prefix).distribution()


def next_char_vector(prefix: str, chars: str) -> list[float]:
    """next_char_distribution(prefix) as a list aligned with `chars` (a tokenizer's alphabet)."""
    distribution = next_char_distribution(prefix)
    missing = sorted(set(distribution) - set(chars))
    if missing:
        raise ValueError(f"chars must contain every possible next character; missing {missing}")
    return [distribution.get(char, 0.0) for char in chars]


def next_char_distributions(text: str) -> list[dict[str, float]]:
    """next_char_distribution(text[:i]) for i = 0..len(text), computed in one pass."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    # Replaying the whole prefix at every position would be quadratic; one frontier is linear.
    frontier = _Frontier()
    out = [frontier.distribution()]
    for position, char in enumerate(text):
        if char == END or char not in out[-1]:
            raise ValueError(
                f"text {_shorten(text)!r} is impossible under the TinyTales grammar: no story "
                f"has {char!r} at position {position} after {_shorten(text[:position])!r}"
            )
        frontier.feed(char)
        out.append(frontier.distribution())
    return out


def greedy_story(max_chars: int, *, prompt: str = "") -> str:
    """Greedy decoding on the grammar itself: `prompt` plus the argmax character at each step.

    Stops once the text has `max_chars` characters, or at END, which is then appended. Ties go
    to the lowest character, so the result is deterministic.
    """
    max_chars = check_int("max_chars", max_chars, low=0)
    frontier = _frontier_after(prompt, name="prompt")
    chars = list(prompt)
    while len(chars) < max_chars:
        char = next(iter(frontier.distribution()))  # the distribution is ranked, best first
        if char == END:
            return "".join(chars) + END
        frontier.feed(char)
        chars.append(char)
    return "".join(chars)


def entropy_rate(stories: Sequence[str]) -> float:
    """Nats per character of `stories` under the grammar, one END per story included.

    This is sum(-story_log_prob(s)) / sum(len(s) + 1), exactly the average per-character
    cross-entropy that the grammar's own next-character probabilities score on these stories
    (each read from the beginning marker through its END): the loss floor for a model trained
    on TinyTales, since no model beats the true distribution in expectation.
    """
    if not stories:
        raise ValueError("stories must be a non-empty sequence of stories, got an empty one")
    nats = 0.0
    for index, story in enumerate(stories):
        log_prob = story_log_prob(story)
        if log_prob == -math.inf:
            raise ValueError(f"stories[{index}] is not a valid story: {_shorten(story)!r}")
        nats -= log_prob
    return nats / sum(len(story) + 1 for story in stories)
