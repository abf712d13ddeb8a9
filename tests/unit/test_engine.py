"""The torch engine and the loader, on a tiny model saved to disk and loaded back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgespec.config import ModelConfig
from edgespec.engine.base import extend
from edgespec.engine.loading import ModelLoadError, load_engine
from tests.conftest import TinyPair


@pytest.fixture(scope="module")
def engine(tiny_pair: TinyPair):  # type: ignore[no-untyped-def]
    return load_engine(tiny_pair.target, ModelConfig(str(tiny_pair.target)))[0]


def test_incremental_logits_equal_a_full_forward(engine) -> None:  # type: ignore[no-untyped-def]
    tokens = [5, 9, 14, 2, 33, 7]
    with torch.no_grad():
        full = engine.model(torch.tensor([tokens])).logits[0]
    session = engine.new_session()
    first = engine.forward(session, tokens[:3], 3)
    rest = engine.forward(session, tokens[3:], 3)
    assert torch.allclose(torch.cat([first, rest]), full, atol=1e-5)


def test_truncation_rolls_the_cache_back_exactly(engine) -> None:  # type: ignore[no-untyped-def]
    session = engine.new_session()
    extend(engine, session, [5, 9, 14], [40, 41, 42], 4)  # a rejected block
    after_rejection = extend(engine, session, [5, 9, 14, 40, 60], [], 1)
    assert session.tokens == [5, 9, 14, 40, 60]
    fresh = extend(engine, engine.new_session(), [5, 9, 14, 40, 60], [], 1)
    assert torch.allclose(after_rejection, fresh, atol=1e-4)


def test_released_sessions_hold_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    session = engine.new_session()
    engine.forward(session, [1, 2], 1)
    engine.release(session)
    assert session.cache is None and session.tokens == []


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: tmp / "missing", "does not exist"),
        (lambda tmp: _write(tmp / "weights.bin"), "not a .gguf"),
        (lambda tmp: tmp, "no config.json"),
    ],
)
def test_bad_model_paths_get_a_clear_error(tmp_path: Path, make_path, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError, match=message):
        load_engine(make_path(tmp_path), ModelConfig("x"))


def _write(path: Path) -> Path:
    path.write_bytes(b"not a model")
    return path
