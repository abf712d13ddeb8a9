"""Text deltas from token ids: stop strings are cut exactly, never leak in part, and are found
across token boundaries; split multi-byte characters wait for their last byte."""

from __future__ import annotations

import random

import pytest

from edgespec.api.text import TextStream
from edgespec.edge.stopping import FinishReason, StopChecker
from edgespec.engine import tiny as tiny_models
from edgespec.engine.tokenizer import TokenizerInfo


@pytest.fixture(scope="module")
def tokenizer() -> TokenizerInfo:
    return TokenizerInfo(tiny_models.build_tokenizer(320), "tiny", eos_token_ids=(2,))


def one_by_one(stream: TextStream, ids: list[int]) -> str:
    text = ""
    for token in ids:
        text += stream.push([token])
        if stream.stopped:
            return text
    return text + stream.finish()


def test_without_stops_the_deltas_add_up_to_the_text(tokenizer: TokenizerInfo) -> None:
    ids = tokenizer.encode("The invention of the printing press changed ideas. Ünïcödé ✓")
    assert one_by_one(TextStream(tokenizer, []), ids) == tokenizer.decode(ids)


def test_a_split_character_waits_for_its_last_byte(tokenizer: TokenizerInfo) -> None:
    ids = tokenizer.encode("✓")
    assert len(ids) > 1  # byte-level: three bytes, not in the tiny vocabulary as one token
    stream = TextStream(tokenizer, [])
    assert [stream.push([token]) for token in ids] == [""] * (len(ids) - 1) + ["✓"]


@pytest.mark.parametrize("stop", ["printing", "g pr", "ess c", "."])
def test_output_ends_right_before_the_stop_string(tokenizer: TokenizerInfo, stop: str) -> None:
    text = "The invention of the printing press changed ideas. More."
    ids = tokenizer.encode(text)
    stream = TextStream(tokenizer, ["never there", stop])
    assert one_by_one(stream, ids) == text[: text.index(stop)]
    assert stream.stopped
    assert stop in tokenizer.decode(ids[: stream.tokens_used])
    assert stop not in tokenizer.decode(ids[: stream.tokens_used - 1])


def test_a_possible_stop_prefix_is_held_back_then_released(tokenizer: TokenizerInfo) -> None:
    ids = tokenizer.encode("for i in range")
    stream = TextStream(tokenizer, ["range(10)"])
    shown = "".join(stream.push([token]) for token in ids)
    assert shown == "for i in "  # "range" might still become the stop string
    assert shown + stream.finish() == "for i in range" and not stream.stopped


def test_a_whole_chunk_is_searched_for_the_earliest_stop(tokenizer: TokenizerInfo) -> None:
    text = "A hash map stores keys and values"
    stream = TextStream(tokenizer, ["values", "keys"])
    assert stream.push(tokenizer.encode(text)) == "A hash map stores "
    assert stream.tokens_used < len(tokenizer.encode(text))


def test_stop_token_ids_apply_even_when_eos_is_ignored() -> None:
    checker = StopChecker(eos_token_ids=(2,), max_tokens=10, ignore_eos=True, stop_token_ids=(7,))
    assert checker.admit([5, 2, 6]) == ([5, 2, 6], None)
    assert checker.admit([8, 7, 9]) == ([8], FinishReason.STOP)


def test_any_ids_in_any_chunks_add_up_to_the_whole_decode(tokenizer: TokenizerInfo) -> None:
    rng = random.Random(0)
    ids = [rng.randrange(3, 320) for _ in range(600)]  # arbitrary bytes: split characters everywhere
    stream, text, start = TextStream(tokenizer, []), "", 0
    while start < len(ids):
        size = rng.randint(1, 6)
        text += stream.push(ids[start : start + size])
        start += size
    assert text + stream.finish() == tokenizer.decode(ids)
