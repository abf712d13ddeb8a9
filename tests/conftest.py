from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's interpreter runs the GPU kernels on CPU tensors (test_kernels.py); it is chosen
    # when Triton's language is first imported, which transformers does, so before anything else
    os.environ.setdefault("TRITON_INTERPRET", "1")

from edgespec.engine import tiny as tiny_models
from edgespec.processes import cloud_process


@dataclass(frozen=True)
class TinyPair:
    target: Path
    draft: Path
    foreign_draft: Path  # a draft whose tokenizer differs from the target's


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """The tiny target and its draft (agreeing ~70% of the time), and a draft of another tokenizer."""
    root = tiny_models.ensure_tiny_pair(tmp_path_factory.mktemp("tiny") / "pair")
    foreign_tokenizer = tiny_models.build_tokenizer(tiny_models.TINY_VOCAB - 40)
    foreign = tiny_models.build_model(len(foreign_tokenizer), seed=2)
    return TinyPair(
        target=root / "tiny-target",
        draft=root / "tiny-draft",
        foreign_draft=tiny_models.save(foreign, foreign_tokenizer, root.parent / "foreign"),
    )


@pytest.fixture(scope="session")
def tiny_cloud(tiny_pair: TinyPair) -> Iterator[int]:
    """A real `edgespec cloud` process serving the tiny target; yields its port."""
    with cloud_process(tiny_pair.target, "--threads", "1") as port:
        yield port
