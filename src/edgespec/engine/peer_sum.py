"""The tensor-parallel sum of a block's partial outputs, read straight from the other GPUs' memory
and fused with what follows it (the residual add and the next RMSNorm): one short kernel where
NCCL took an all-reduce kernel and then our add-and-norm kernel.

At verify sizes (a few rows of a few thousand numbers) an all-reduce is all latency: NCCL's took
11–14 µs on two H100s, and a step of an 8B model has 72 of them (docs/scaling.md). Here each rank's
output projection writes its partial straight into a buffer the other ranks can read (torch's
symmetric memory, peer-to-peer over NVLink, multicast not needed); then every rank runs one program
per row that

    1. meets the same row's program on every other rank: each rank counts its meetings of the row
       in its own memory, writes the count into every rank's pad and waits until every rank's count
       in its own pad has reached it (counters in GPU memory: a CUDA graph replays it as is),
    2. sums the row's partials in rank order (so every rank gets the same bits), in float32,
    3. adds the sum to the residual stream and normalises it for the next block.

Two buffers alternate, the attention block's and the MLP block's, because blocks alternate: a rank
writes a buffer again only two sums later, and it cannot have passed the sum in between before
every other rank had finished reading the first one.

The head's vocabulary slices are still gathered by NCCL: gathering them the same way (turning them
into float32 on the way) took 20 µs a step on two H200s, no less than NCCL's all-gather (13 µs on
two H100s) and the concatenation and conversion after it, so it was not kept.

A rank lost in the middle of a step leaves the others waiting in the kernel for good, where NCCL's
watchdog would have aborted them after its timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import triton
import triton.language as tl

from edgespec.engine.compact_model import CompactModel
from edgespec.engine.kernels import launch_flags, store_rms_norm, wait_for_inputs

# Rows (batch × new tokens) handled this way; more go through NCCL. Each program waits for its twin
# on every other GPU, so all of a kernel's programs must be resident at once, whatever order a GPU
# starts them in: a kernel has at most this many, fewer than any GPU we target has multiprocessors
# (a 160-row step, with a program a row, did not finish on two H200s; 40 rows did).
MAX_ROWS = 64
BLOCKS = 2  # attention, MLP


class PeerSum:
    """This rank's end of the peer-memory sums, for rows of `width` values of `dtype`. Every rank of
    the default group constructs it at the same point (the buffers are exchanged then)."""

    def __init__(self, width: int, dtype: torch.dtype, device: torch.device) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._partials = _shared((BLOCKS, MAX_ROWS, width), dtype, device)
        self._pads = _shared((MAX_ROWS * self.world,), torch.int64, device)
        self._meetings = torch.zeros(MAX_ROWS, dtype=torch.int64, device=device)  # held so far, per row
        torch.cuda.synchronize(device)
        dist.barrier()  # no rank writes into a pad before every rank has zeroed its own

    @staticmethod
    def available(world: int) -> bool:
        """Whether every GPU of the group can read every other's memory directly."""
        pairs = [(a, b) for a in range(world) for b in range(world) if a != b]
        return torch.cuda.device_count() >= world and all(torch.cuda.can_device_access_peer(a, b) for a, b in pairs)

    def sums(self, x: torch.Tensor) -> bool:
        return _rows(x.shape) <= MAX_ROWS

    def partial(self, block: int, shape: torch.Size) -> torch.Tensor:
        """Where this rank writes its partial output of `block` (0 attention, 1 MLP), as `shape`."""
        return self._partials.local[block, : _rows(shape)].view(shape)

    def add_rms_norm(
        self, block: int, x: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + Σ partials, RMSNorm(x + Σ partials)), with `block`'s partials of every rank (each
        rank must have written its own through `partial`)."""
        width = x.shape[-1]
        total, normed = torch.empty_like(x), torch.empty_like(x)
        offset = block * self._partials.local.stride(0)
        _sum_add_rms_norm[(_rows(x.shape),)](
            self._partials.addresses, self._pads.addresses, self._meetings, x, weight, total, normed, offset, width,
            eps, RANK=self.rank, WORLD=self.world, BLOCK=triton.next_power_of_2(width), **launch_flags(x.device),
        )  # fmt: skip
        return total, normed


@dataclass(frozen=True)
class _Shared:
    """A tensor in symmetric memory: this rank's view, and every rank's address for kernels."""

    local: torch.Tensor
    addresses: torch.Tensor


def _shared(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> _Shared:
    """Zeros in symmetric memory; every rank must call this at the same point."""
    import torch.distributed._symmetric_memory as symmetric  # CUDA builds only

    local = symmetric.empty(*shape, dtype=dtype, device=device).zero_()
    group = dist.group.WORLD
    assert group is not None
    handle = symmetric.rendezvous(local, group)
    return _Shared(local, torch.tensor(handle.buffer_ptrs, dtype=torch.int64, device=device))


def _rows(shape: torch.Size) -> int:
    return shape.numel() // shape[-1]


def connect(model: CompactModel) -> bool:
    """Sum the fused step's blocks of this rank's shard through peer memory, where every GPU of the
    group reaches every other's; whether it does (otherwise NCCL keeps summing them)."""
    world = dist.get_world_size()
    if not model.embed.is_cuda or world < 2 or not PeerSum.available(world):
        return False
    model.peer_sum = PeerSum(model.embed.shape[1], model.embed.dtype, model.embed.device)
    return True


@triton.jit
def _arrive(pad_addresses, meetings_ptr, row, RANK: tl.constexpr, WORLD: tl.constexpr):
    """Tell every rank that this rank's `row` program is at its next meeting; returns its number."""
    meeting = tl.load(meetings_ptr + row) + 1
    tl.store(meetings_ptr + row, meeting)
    pads = pad_addresses.to(tl.pointer_type(tl.uint64))
    for other in tl.static_range(WORLD):
        theirs = tl.load(pads + other).to(tl.pointer_type(tl.int64))
        tl.store(theirs + row * WORLD + RANK, meeting)
    return meeting


@triton.jit
def _await(pad_addresses, meeting, row, RANK: tl.constexpr, WORLD: tl.constexpr):
    """Wait until every rank's `row` program has arrived at `meeting`. What the ranks' earlier
    kernels wrote is then visible to all: a kernel's writes are done before the next kernel on its
    stream starts (or, launched early, passes its wait for them). So plain stores and loads suffice
    (acquire-release atomics at system scope doubled the cost of a sum)."""
    own = tl.load(pad_addresses.to(tl.pointer_type(tl.uint64)) + RANK).to(tl.pointer_type(tl.int64))
    for other in tl.static_range(WORLD):
        while tl.load(own + row * WORLD + other, volatile=True) < meeting:
            pass
    tl.debug_barrier()


@triton.jit
def _sum_add_rms_norm(partial_addresses, pad_addresses, meetings_ptr, x_ptr, weight_ptr, total_ptr, normed_ptr,
                      offset, width, eps, RANK: tl.constexpr, WORLD: tl.constexpr, BLOCK: tl.constexpr,
                      EARLY: tl.constexpr):  # fmt: skip
    wait_for_inputs(EARLY)  # launched early, the partial is this rank's only once the product has ended
    row = tl.program_id(0)
    meeting = _arrive(pad_addresses, meetings_ptr, row, RANK, WORLD)
    cols = tl.arange(0, BLOCK)
    inside = cols < width
    here = row.to(tl.int64) * width + cols
    at = offset + here
    buffers = partial_addresses.to(tl.pointer_type(tl.uint64))
    of_dtype = tl.pointer_type(x_ptr.dtype.element_ty)
    # what is in this GPU's memory is read while the other ranks' arrivals travel
    x = tl.load(x_ptr + here, mask=inside, other=0.0)
    own = tl.load(tl.load(buffers + RANK).to(of_dtype) + at, mask=inside, other=0.0)
    _await(pad_addresses, meeting, row, RANK, WORLD)
    summed = tl.zeros([BLOCK], tl.float32)
    for rank in tl.static_range(WORLD):  # in rank order on every rank: all get the same bits
        if rank == RANK:
            summed += own.to(tl.float32)
        else:
            summed += tl.load(tl.load(buffers + rank).to(of_dtype) + at, mask=inside, other=0.0).to(tl.float32)
    # the sum rounded to the dtype, then added and rounded, as NCCL and then torch would round them
    x = (x.to(tl.float32) + summed.to(x.dtype).to(tl.float32)).to(x.dtype)
    tl.store(total_ptr + here, x, mask=inside)
    store_rms_norm(x, weight_ptr, normed_ptr + here, cols, inside, width, eps)
