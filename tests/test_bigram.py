"""Tests for the census-names bigram: the shipped table, its provenance, and the model."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lessonlib.bigram import (
    BIGRAM_SYMBOLS,
    COUNTS_PATH,
    BigramModel,
    load_bigram,
    load_bigram_counts,
    parse_bigram_counts,
)
from lessonlib.paths import DATA_DIR

PROVENANCE = (DATA_DIR / "names_bigram.md").read_text(encoding="utf-8")
V = len(BIGRAM_SYMBOLS)
START = BIGRAM_SYMBOLS.index("·")


@pytest.fixture(scope="module")
def counts() -> torch.Tensor:
    return load_bigram_counts()


def recorded(pattern: str) -> str:
    """The first group of `pattern` in the provenance note (fails the test if absent)."""
    match = re.search(pattern, PROVENANCE)
    assert match is not None, f"names_bigram.md has no line matching {pattern!r}"
    return match.group(1)


def test_symbols_are_boundary_then_lowercase_letters():
    assert BIGRAM_SYMBOLS[0] == "\u00b7"
    assert BIGRAM_SYMBOLS[1:] == "".join(chr(c) for c in range(ord("a"), ord("z") + 1))


def test_counts_table_shape_dtype_and_labels(counts):
    assert counts.shape == (27, 27)
    assert counts.dtype == torch.int64
    lines = COUNTS_PATH.read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",") == ["", *BIGRAM_SYMBOLS]
    assert [line.split(",")[0] for line in lines[1:]] == list(BIGRAM_SYMBOLS)


def test_csv_matches_sha256_recorded_in_provenance():
    digest = hashlib.sha256(COUNTS_PATH.read_bytes()).hexdigest()
    assert digest == recorded(r"sha256 of names_bigram_counts\.csv: ([0-9a-f]{64})")


def test_start_row_counts_each_recorded_name_once(counts):
    # Each distinct name opens with one `·x` bigram and closes with one `x·` bigram.
    names = int(recorded(r"; (\d+) distinct names"))
    assert int(counts[START].sum()) == names
    assert int(counts[:, START].sum()) == names
    assert int(counts.sum()) == int(recorded(r"Total bigrams: (\d+)"))


def test_every_symbol_is_followed_as_often_as_it_is_preceded(counts):
    # In `·name·` every symbol occurrence has one successor and one predecessor.
    assert torch.equal(counts.sum(dim=1), counts.sum(dim=0))


def test_every_row_has_counts_and_the_boundary_never_follows_itself(counts):
    # Every letter occurs in some census name, and no name is empty.
    assert bool((counts.sum(dim=1) > 0).all())
    assert int(counts[START, START]) == 0


def test_start_row_argmax_is_a_letter(counts):
    assert BIGRAM_SYMBOLS[int(counts[START].argmax())] != "·"


@pytest.mark.parametrize("smoothing", [0.0, 0.5, 1.0, 3])
def test_probability_rows_sum_to_one(smoothing):
    model = BigramModel(load_bigram_counts(), smoothing=smoothing)
    all_probs = torch.stack([model.probs(c) for c in BIGRAM_SYMBOLS])
    assert all_probs.shape == (V, V)
    torch.testing.assert_close(all_probs.sum(dim=1), torch.ones(V), atol=1e-6, rtol=0)


@pytest.mark.parametrize("smoothing", [0.0, 1.0, 2.5])
def test_probs_are_add_smoothing_frequencies(counts, smoothing):
    model = BigramModel(counts, smoothing=smoothing)
    for i, char in enumerate(BIGRAM_SYMBOLS):
        row = counts[i].double() + smoothing
        torch.testing.assert_close(model.probs(char).double(), row / row.sum())


def test_smoothing_zero_forbids_unseen_pairs_and_one_allows_them(counts):
    raw = BigramModel(counts, smoothing=0)
    smoothed = BigramModel(counts, smoothing=1)
    assert float(raw.probs("·")[START]) == 0.0
    assert bool(torch.isneginf(raw(torch.tensor([[START]]))[0, 0, START]))
    assert bool((torch.stack([smoothed.probs(c) for c in BIGRAM_SYMBOLS]) > 0).all())


def test_argmax_of_probs_follows_the_counts(counts):
    model, _ = load_bigram()
    for i, char in enumerate(BIGRAM_SYMBOLS):
        # Ties could let argmax pick either, so compare the counts at the chosen index.
        assert counts[i, int(model.probs(char).argmax())] == counts[i].max()


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (4, 3), (2, 0)])
def test_forward_shape(shape):
    model, _ = load_bigram()
    token_ids = torch.randint(0, V, shape, generator=torch.Generator().manual_seed(0))
    logits = model(token_ids)
    assert logits.shape == (*shape, V)
    assert logits.dtype == torch.float32


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, V - 1), min_size=3, max_size=3), min_size=1, max_size=4))
def test_forward_reads_only_each_positions_own_token(rows):
    model, _ = load_bigram()
    token_ids = torch.tensor(rows)
    logits = model(token_ids)
    for b, row in enumerate(rows):
        for t, token_id in enumerate(row):
            expected = model.probs(BIGRAM_SYMBOLS[token_id]).log()
            torch.testing.assert_close(logits[b, t], expected)


def test_model_interface_and_ignored_kv_cache():
    model, tokenizer = load_bigram()
    assert model.vocab_size == tokenizer.vocab_size == 27
    assert model.block_size == 1
    assert model.new_kv_cache(batch_size=3) is None
    token_ids = torch.tensor([tokenizer.encode("·anna·")])
    torch.testing.assert_close(model(token_ids, kv_cache=object()), model(token_ids))
    assert list(model.parameters()) == []


def test_tokenizer_round_trip_and_boundary():
    _, tokenizer = load_bigram()
    assert tokenizer.boundary == "·"
    assert tokenizer.boundary_id == START
    assert tokenizer.decode(tokenizer.encode("·zoe·")) == "·zoe·"


def test_forward_accepts_other_integer_dtypes_and_returns_a_copy():
    model, _ = load_bigram()
    before = model.log_probs.clone()
    logits = model(torch.tensor([[1, 2]], dtype=torch.int32))
    logits.zero_()
    assert torch.equal(model.log_probs, before)


@pytest.mark.parametrize(
    ("token_ids", "error", "message"),
    [
        (torch.tensor([[0.0, 1.0]]), TypeError, "integer dtype"),
        (torch.tensor([[True]]), TypeError, "integer dtype"),
        ([[0, 1]], TypeError, "torch.Tensor"),
        (torch.tensor([0, 1]), ValueError, r"\(B, T\)"),
        (torch.tensor([[[0]]]), ValueError, r"\(B, T\)"),
        (torch.tensor([[0, 27]]), ValueError, r"contains 27; accepted ids are 0\.\.26"),
        (torch.tensor([[-1, 3]]), ValueError, r"contains -1"),
    ],
)
def test_forward_rejects_bad_token_ids(token_ids, error, message):
    model, _ = load_bigram()
    with pytest.raises(error, match=message):
        model(token_ids)


@pytest.mark.parametrize("context_char", ["A", "", "ab", "·a", " "])
def test_probs_rejects_unknown_context(context_char):
    model, _ = load_bigram()
    with pytest.raises(ValueError, match="context_char"):
        model.probs(context_char)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"smoothing": -1.0}, ValueError, "smoothing must be a finite number >= 0"),
        ({"smoothing": float("nan")}, ValueError, "smoothing"),
        ({"smoothing": float("inf")}, ValueError, "smoothing"),
        ({"smoothing": "1"}, TypeError, "smoothing must be a real number >= 0"),
        ({"symbols": "abc"}, ValueError, "symbols must be 27 distinct"),
    ],
)
def test_model_rejects_bad_arguments(counts, kwargs, error, message):
    with pytest.raises(error, match=message):
        BigramModel(counts, **kwargs)


@pytest.mark.parametrize(
    ("counts_arg", "error", "message"),
    [
        (torch.zeros(3, 4, dtype=torch.int64), ValueError, r"shape \(V, V\)"),
        (torch.zeros(27, 27), TypeError, "integer dtype"),
        (torch.full((27, 27), -1), ValueError, "non-negative"),
        ([[1]], TypeError, "torch.Tensor"),
    ],
)
def test_model_rejects_bad_counts(counts_arg, error, message):
    with pytest.raises(error, match=message):
        BigramModel(counts_arg)


def test_empty_row_needs_smoothing():
    counts = torch.tensor([[0, 2], [0, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] have no counts"):
        BigramModel(counts, smoothing=0, symbols="·a")
    model = BigramModel(counts, smoothing=1, symbols="·a")
    torch.testing.assert_close(model.probs("a"), torch.tensor([0.5, 0.5]))


def test_new_kv_cache_rejects_bad_batch_size():
    model, _ = load_bigram()
    for batch_size in (0, -2):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            model.new_kv_cache(batch_size)
    for batch_size in (1.5, True):
        with pytest.raises(TypeError, match="batch_size must be an int >= 1"):
            model.new_kv_cache(batch_size)


def _csv_lines() -> list[str]:
    return COUNTS_PATH.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:-1], "expected 27 rows after the header, got 26"),
        (lambda lines: [lines[0].replace(",z", ",Z"), *lines[1:]], "header must be"),
        (lambda lines: [], "got an empty first line"),
        (lambda lines: [*lines[:2], lines[3], lines[2], *lines[4:]], "line 3 must be 'a'"),
        (lambda lines: [*lines[:5], lines[5] + ",7", *lines[6:]], "line 6 must be 'd'"),
        (lambda lines: [lines[0], lines[1].replace(",394,", ",-3,"), *lines[2:]], "'-3'"),
        (lambda lines: [lines[0], lines[1].replace(",394,", ",3.5,"), *lines[2:]], "'3.5'"),
    ],
)
def test_parse_rejects_malformed_tables(edit, message):
    edited = "\n".join(edit(_csv_lines())) + "\n"
    assert edited != COUNTS_PATH.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_bigram_counts(edited)


def test_load_reports_the_file_name(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text(",a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="counts.csv: header must be"):
        load_bigram_counts(path)
