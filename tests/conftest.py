from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgespec.processes import cloud_process
from tests import tiny_models

TINY_VOCAB = 320


@dataclass(frozen=True)
class TinyPair:
    target: Path
    draft: Path
    foreign_draft: Path  # a draft whose tokenizer differs from the target's


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = tiny_models.build_tokenizer(TINY_VOCAB)
    target = tiny_models.build_model(len(tokenizer), seed=0)
    draft = tiny_models.perturbed_copy(target, noise=0.02, seed=1)  # agrees with the target ~70% of the time
    foreign_tokenizer = tiny_models.build_tokenizer(TINY_VOCAB - 40)
    foreign = tiny_models.build_model(len(foreign_tokenizer), seed=2)
    return TinyPair(
        target=tiny_models.save(target, tokenizer, root / "target"),
        draft=tiny_models.save(draft, tokenizer, root / "draft"),
        foreign_draft=tiny_models.save(foreign, foreign_tokenizer, root / "foreign"),
    )


@pytest.fixture(scope="session")
def tiny_cloud(tiny_pair: TinyPair) -> Iterator[int]:
    """A real `edgespec cloud` process serving the tiny target; yields its port."""
    with cloud_process(tiny_pair.target, "--threads", "1") as port:
        yield port
