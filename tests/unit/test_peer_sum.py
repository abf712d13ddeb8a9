"""The peer-memory sum (engine/peer_sum.py), its kernel run by Triton's interpreter on CPU tensors
standing in for two ranks' buffers, the ranks taking turns: each meeting's counts go where the
other rank looks for them, both ranks get the same bits, and those bits are NCCL's sum followed by
the fused add and norm. tests/gpu/test_peer_sum_gpu.py runs it between two real GPUs."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from edgespec.engine.kernels import add_rms_norm
from edgespec.engine.peer_sum import _sum_add_rms_norm

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the interpreter runs only without CUDA; tests/gpu runs the kernels on GPUs"
)

ROWS, WIDTH, WORLD, EPS = 3, 48, 2, 1e-6
BLOCK = 1  # the MLP block's buffer: a nonzero offset into each rank's partials
DTYPE = torch.float32  # the interpreter adds bfloat16 wrongly; the GPU test runs bfloat16


class TwoRanks:
    """Each rank's partials [block, row, width], pad [row, rank] and meeting counts [row]."""

    def __init__(self) -> None:
        torch.manual_seed(3)
        self.partials = [torch.randn(2, ROWS, WIDTH, dtype=DTYPE) for _ in range(WORLD)]
        self.pads = [torch.zeros(ROWS, WORLD, dtype=torch.int64) for _ in range(WORLD)]
        self.meetings = [torch.zeros(ROWS, dtype=torch.int64) for _ in range(WORLD)]
        self.x = torch.randn(ROWS, WIDTH, dtype=DTYPE)
        self.weight = torch.rand(WIDTH, dtype=DTYPE) + 0.5

    def sum_add_rms_norm(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        total, normed = torch.empty_like(self.x), torch.empty_like(self.x)
        _sum_add_rms_norm[(ROWS,)](
            _addresses(self.partials), _addresses(self.pads), self.meetings[rank], self.x, self.weight, total,
            normed, BLOCK * ROWS * WIDTH, WIDTH, EPS, RANK=rank, WORLD=WORLD, BLOCK=64, EARLY=False,
        )  # fmt: skip
        return total, normed


def _addresses(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64)


def test_both_ranks_get_the_all_reduced_sum_added_and_normalised() -> None:
    ranks = TwoRanks()
    for meeting in (1, 2):
        ranks.pads[0][:, 1] = meeting  # rank 1 has arrived at every row's meeting; rank 0 runs first
        first = ranks.sum_add_rms_norm(0)
        assert ranks.meetings[0].eq(meeting).all()
        assert all(pad[:, 0].eq(meeting).all() for pad in ranks.pads), "rank 0 told both"
        second = ranks.sum_add_rms_norm(1)  # it finds rank 0's count, and leaves its own in both pads
        assert ranks.meetings[1].eq(meeting).all() and all(pad[:, 1].eq(meeting).all() for pad in ranks.pads)

    summed = ranks.partials[0][BLOCK] + ranks.partials[1][BLOCK]  # what NCCL's all-reduce gives
    expected = add_rms_norm(ranks.x, summed, ranks.weight, EPS)
    for ours, theirs in zip(first, expected, strict=True):
        assert torch.equal(ours, theirs)
    for rank_0, rank_1 in zip(first, second, strict=True):
        assert torch.equal(rank_0, rank_1), "every rank must hold the same residual stream"
