"""Triton kernels that fuse the verify step's small operations, so a layer is five matrix products
and five short kernels instead of some twenty-five launches (on a GPU at batch 1 those launches,
not the arithmetic, were a third of the step: docs/gpu-verifier.md).

    add_rms_norm        residual add + RMSNorm, one pass over each row
    silu_mul            SiLU(gate) · up
    rotate_and_store    per-head RMSNorm (Qwen3) + rotary embedding of queries and keys; new keys
                        and values written straight into their cache rows
    cached_attention    causal attention of each session's queries over its own cache slot, read
                        in place through the slot index (no gathered copy), split along the keys
                        when there are few sessions so that every multiprocessor has work

On Hopper and newer GPUs each kernel is launched early (programmatic dependent launch): its programs
start while the kernel before it finishes and wait, in the kernel, for that one's writes before
reading its inputs; the skinny product meanwhile starts pulling its first weights into L2 (they do
not depend on the kernel before). Less of each of a step's ~300 kernels is then spent being
launched and filling the GPU: 0.25–0.35 ms of a batch-1 step on an H100, nothing measurable on an
H200 (docs/gpu-verifier.md).

A kernel is compiled once per model and row block, never per length: Triton would compile anew
for each integer argument's divisibility by 16 and for each value of a constant, so lengths are
left unspecialized and the attention's split and unsplit cases are one binary. An H100 serving
Qwen3-8B's shape spent 0.69 s compiling at its first prompt of an odd length past the prompt
graphs, and ~0.45 s at its first round of 2 tokens, stalling every session (docs/gpu-verifier.md).

Each follows transformers' rounding where it is cheap to (sums in float32, the dtype's rounding
where transformers rounds), so outputs match the unfused arithmetic to the last bit or two.
Without a GPU, Triton's interpreter runs them on CPU tensors (TRITON_INTERPRET=1, set before
anything imports Triton: tests/conftest.py does): that is how CI checks them, slowly; the CPU
engine never calls them."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

ATTENTION_BLOCK = 64  # keys per inner step of the attention kernel
QUERY_BLOCK = 64  # query rows (tokens × heads of a group) per attention program
PROGRAMS_PER_SM = 1  # attention programs per multiprocessor; more splits cost more than they gained
SKINNY_ROWS = 16
SKINNY_K = 256  # the inner dimension skinny_linear takes is a multiple of this, its largest K block
PREFETCH_LINES = 16  # 128-byte lines of each weight row the skinny kernel asks L2 for before its inputs are ready
LAUNCH_EARLY = True  # where the GPU can (Hopper and newer); read at every launch: a benchmark may turn it off


def launch_flags(device: torch.device) -> dict[str, bool]:
    """The EARLY constant every kernel here takes, with Triton's launch option that goes with it."""
    if LAUNCH_EARLY and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9:
        return {"EARLY": True, "launch_pdl": True}
    return {"EARLY": False}


def add_rms_norm(
    x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + delta, RMSNorm(x + delta)); without delta, (x, RMSNorm(x))."""
    width = x.shape[-1]
    rows = x.numel() // width
    total = torch.empty_like(x) if delta is not None else x
    normed = torch.empty_like(x)
    _add_rms_norm[(rows,)](
        x, delta if delta is not None else x, weight, total, normed, width, eps,
        HAS_DELTA=delta is not None, BLOCK=triton.next_power_of_2(width), **launch_flags(x.device),
    )  # fmt: skip
    return total, normed


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU of the first half of the last dimension times the second half."""
    width = gate_up.shape[-1] // 2
    rows = gate_up.numel() // (2 * width)
    out = gate_up.new_empty(*gate_up.shape[:-1], width)
    block = 1024
    _silu_mul[(rows, triton.cdiv(width, block))](gate_up, out, width, BLOCK=block, **launch_flags(out.device))
    return out


def rotate_and_store(
    qkv: torch.Tensor,  # [B, q, (heads + 2·kv_heads)·head_dim], the fused projection's output
    norms: tuple[torch.Tensor, torch.Tensor] | None,  # Qwen3's query and key RMSNorm weights
    rotation: tuple[torch.Tensor, torch.Tensor],  # cos, sin [B·q, head_dim / 2], float32
    cache: tuple[torch.Tensor, torch.Tensor],  # this layer's keys, values [slots, max_len, kv_heads, d]
    where: tuple[torch.Tensor, torch.Tensor],  # slots [B], positions [B, q]
    heads: int,
    eps: float,
) -> torch.Tensor:
    """Queries [B, q, heads, head_dim], normed and rotated; the keys (normed, rotated) and values
    go into the cache at each token's (slot, position)."""
    batch, new_tokens, _ = qkv.shape
    keys, values = cache
    max_len, kv_heads, head_dim = keys.shape[1:]
    query = qkv.new_empty(batch, new_tokens, heads, head_dim)
    q_norm, k_norm = norms if norms is not None else (qkv, qkv)  # unread without NORM
    _rotate_and_store[(batch * new_tokens, heads + kv_heads)](
        qkv, query, keys, values, q_norm, k_norm, *rotation, *where,
        new_tokens, max_len, heads, kv_heads, eps,
        HEAD_DIM=head_dim, NORM=norms is not None, **launch_flags(qkv.device),
    )  # fmt: skip
    return query


def cached_attention(
    query: torch.Tensor,  # [B, q, heads, head_dim]
    cache: tuple[torch.Tensor, torch.Tensor],  # this layer's keys, values [slots, max_len, kv_heads, d]
    where: tuple[torch.Tensor, torch.Tensor],  # slots [B], positions [B, q]
    span: int,  # no session's keys reach this position: bounds how many key ranges are worth launching
) -> torch.Tensor:
    """Attention output [B, q, heads, head_dim]: each query sees its session's keys up to its own
    position. The heads sharing a key head are extra query rows of one program, so each key is
    read once per session; a prefill's many rows are cut into blocks of QUERY_BLOCK rows. Each
    program cuts its session's keys into even ranges itself, so the kernel is the same for every
    context length (one CUDA graph serves them all)."""
    batch, new_tokens, heads, head_dim = query.shape
    keys, values = cache
    max_len, kv_heads = keys.shape[1], keys.shape[2]
    group = heads // kv_heads
    rows = min(QUERY_BLOCK, max(16, triton.next_power_of_2(new_tokens * group)))  # tl.dot takes ≥ 16
    row_blocks = triton.cdiv(new_tokens * group, rows)
    splits = _splits(batch * kv_heads * row_blocks, span, query.device)
    out = torch.empty_like(query)
    all_rows = row_blocks * rows
    partial = (
        query.new_empty(batch * kv_heads, splits, all_rows, head_dim, dtype=torch.float32),
        query.new_empty(batch * kv_heads, splits, all_rows, dtype=torch.float32),  # running maxima
        query.new_empty(batch * kv_heads, splits, all_rows, dtype=torch.float32),  # running sums
    )
    _attention[(batch * kv_heads, splits, row_blocks)](
        query, keys, values, *where, out, *partial,
        new_tokens, max_len, heads, kv_heads, all_rows, head_dim**-0.5,
        GROUP=group, HEAD_DIM=head_dim, ROWS=rows, BLOCK_N=ATTENTION_BLOCK,
        **launch_flags(query.device),
    )  # fmt: skip
    if splits > 1:
        _combine[(batch * kv_heads, new_tokens * group)](
            *partial, out, splits, new_tokens, heads, kv_heads, all_rows,
            GROUP=group, HEAD_DIM=head_dim, SPLITS=_most_splits(kv_heads, query.device),
            **launch_flags(query.device),
        )  # fmt: skip
    return out


def skinny_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x [..., K] @ weight[N, K]ᵀ for a few rows of x (at most SKINNY_ROWS; K a multiple of
    SKINNY_K): each program streams a strip of the weight once. On a GPU the strip width and
    pipelining depth are tuned once per weight shape, with the cache flushed between trials; for
    the verify step's 1–16 rows this reads the weights faster than cuBLAS did (docs/gpu-verifier.md).
    Into `out` when given (contiguous, of x's shape but N last)."""
    x = x.contiguous()  # rows are read at a stride of K
    k = x.shape[-1]
    rows = x.numel() // k
    n = weight.shape[0]
    out = x.new_empty(*x.shape[:-1], n) if out is None else out
    arguments = (x, weight, bias if bias is not None else weight, out, rows, n, k)
    flags = {"HAS_BIAS": bias is not None, "BLOCK_M": max(16, triton.next_power_of_2(rows))}
    flags |= {"LINE": 128 // weight.element_size(), "PREFETCH": PREFETCH_LINES, **launch_flags(x.device)}
    if _tuned_skinny_linear is not None and x.is_cuda:
        _tuned_skinny_linear[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*arguments, **flags)
    else:  # Triton's interpreter cannot time configurations
        _skinny_linear[(triton.cdiv(n, 32),)](*arguments, **flags, BLOCK_N=32, BLOCK_K=SKINNY_K)
    return out


def _most_splits(kv_heads: int, device: torch.device) -> int:
    """A power of two no batch's key ranges exceed: one merge kernel serves every batch size, so a
    new batch size compiles nothing (a compile stalls every session for about a second)."""
    return triton.next_power_of_2(_splits(kv_heads, 1 << 40, device))


def _splits(programs: int, span: int, device: torch.device) -> int:
    """Key ranges per (session, key head, row block): few programs get several, so the step has
    about PROGRAMS_PER_SM programs for every multiprocessor; each range at least one block."""
    on_gpu = device.type == "cuda"
    processors = torch.cuda.get_device_properties(device).multi_processor_count if on_gpu else 8  # interpreter
    wanted = triton.cdiv(PROGRAMS_PER_SM * processors, programs)
    return max(1, min(wanted, triton.cdiv(span, ATTENTION_BLOCK)))


@triton.jit
def wait_for_inputs(EARLY: tl.constexpr):
    """Where launched early: wait for the kernel before to finish (its writes are then visible), and
    let the next kernel launch. Every early kernel calls this before reading or writing anything the
    step shares: so a kernel's end implies the ends of all before it."""
    if EARLY:
        gdc_wait()
        gdc_launch_dependents()


@triton.jit
def _prefetch_to_l2(pointers):
    """Ask L2 for the 128-byte lines at `pointers`, without waiting for them."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [pointers], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _add_rms_norm(x_ptr, delta_ptr, weight_ptr, total_ptr, normed_ptr, width, eps,
                  HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr, EARLY: tl.constexpr):  # fmt: skip
    wait_for_inputs(EARLY)
    row = tl.program_id(0).to(tl.int64) * width
    cols = tl.arange(0, BLOCK)
    inside = cols < width
    x = tl.load(x_ptr + row + cols, mask=inside, other=0.0)
    if HAS_DELTA:
        x = x + tl.load(delta_ptr + row + cols, mask=inside, other=0.0)  # rounded, as torch adds
        tl.store(total_ptr + row + cols, x, mask=inside)
    store_rms_norm(x, weight_ptr, normed_ptr + row + cols, cols, inside, width, eps)


@triton.jit
def store_rms_norm(x, weight_ptr, out_at, cols, inside, width, eps):
    """RMSNorm of the row x (its `cols`; those not `inside` are zero) into the addresses out_at."""
    wide = x.to(tl.float32)
    scale = tl.rsqrt(tl.sum(wide * wide, axis=0) / width + eps)
    weight = tl.load(weight_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    # transformers rounds the normalised row to the dtype before scaling it by the weight
    normed = (wide * scale).to(x.dtype).to(tl.float32) * weight
    tl.store(out_at, normed, mask=inside)


@triton.jit
def _silu_mul(gate_up_ptr, out_ptr, width, BLOCK: tl.constexpr, EARLY: tl.constexpr):
    wait_for_inputs(EARLY)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width
    gate = tl.load(gate_up_ptr + row * 2 * width + cols, mask=inside, other=0.0)
    up = tl.load(gate_up_ptr + row * 2 * width + width + cols, mask=inside, other=0.0)
    wide = gate.to(tl.float32)
    activated = (wide * tl.sigmoid(wide)).to(gate.dtype)
    tl.store(out_ptr + row * width + cols, activated * up, mask=inside)


@triton.jit
def _norm_and_rotate(lo, hi, weight_ptr, cos, sin, eps, HEAD_DIM: tl.constexpr, NORM: tl.constexpr):
    """One head's two halves (float32) normed (when NORM) and rotated."""
    half = tl.arange(0, HEAD_DIM // 2)
    if NORM:
        scale = tl.rsqrt((tl.sum(lo * lo, axis=0) + tl.sum(hi * hi, axis=0)) / HEAD_DIM + eps)
        lo = lo * scale * tl.load(weight_ptr + half).to(tl.float32)
        hi = hi * scale * tl.load(weight_ptr + HEAD_DIM // 2 + half).to(tl.float32)
    return lo * cos - hi * sin, hi * cos + lo * sin


@triton.jit(do_not_specialize=["new_tokens"])
def _rotate_and_store(qkv_ptr, query_ptr, keys_ptr, values_ptr, q_norm_ptr, k_norm_ptr, cos_ptr, sin_ptr,
                      slots_ptr, positions_ptr, new_tokens, max_len, heads, kv_heads, eps,
                      HEAD_DIM: tl.constexpr, NORM: tl.constexpr, EARLY: tl.constexpr):  # fmt: skip
    wait_for_inputs(EARLY)
    token = tl.program_id(0).to(tl.int64)  # b·q + t
    head = tl.program_id(1)  # query heads first, then key heads (each carrying its value head)
    half = tl.arange(0, HEAD_DIM // 2)
    row = qkv_ptr + token * (heads + 2 * kv_heads) * HEAD_DIM
    lo = tl.load(row + head * HEAD_DIM + half).to(tl.float32)
    hi = tl.load(row + head * HEAD_DIM + HEAD_DIM // 2 + half).to(tl.float32)
    cos = tl.load(cos_ptr + token * (HEAD_DIM // 2) + half)
    sin = tl.load(sin_ptr + token * (HEAD_DIM // 2) + half)
    if head < heads:
        lo, hi = _norm_and_rotate(lo, hi, q_norm_ptr, cos, sin, eps, HEAD_DIM, NORM)
        target = query_ptr + (token * heads + head) * HEAD_DIM
    else:
        lo, hi = _norm_and_rotate(lo, hi, k_norm_ptr, cos, sin, eps, HEAD_DIM, NORM)
        kv = head - heads
        slot = tl.load(slots_ptr + token // new_tokens)
        place = ((slot * max_len + tl.load(positions_ptr + token)) * kv_heads + kv) * HEAD_DIM
        value = row + (heads + kv_heads + kv) * HEAD_DIM
        dims = tl.arange(0, HEAD_DIM)
        tl.store(values_ptr + place + dims, tl.load(value + dims))
        target = keys_ptr + place
    tl.store(target + half, lo)
    tl.store(target + HEAD_DIM // 2 + half, hi)


@triton.jit(do_not_specialize=["new_tokens", "all_rows"])
def _attention(query_ptr, keys_ptr, values_ptr, slots_ptr, positions_ptr, out_ptr, acc_ptr, max_ptr, sum_ptr,
               new_tokens, max_len, heads, kv_heads, all_rows, scale,
               GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
               EARLY: tl.constexpr):  # fmt: skip
    wait_for_inputs(EARLY)
    pair = tl.program_id(0).to(tl.int64)  # b·kv_heads + kv
    split = tl.program_id(1)
    session, kv = pair // kv_heads, pair % kv_heads
    rows = tl.program_id(2) * ROWS + tl.arange(0, ROWS)  # row r: token r // GROUP, head kv·GROUP + r % GROUP
    real = rows < new_tokens * GROUP
    token = session * new_tokens + rows // GROUP
    head_offset = (token * heads + kv * GROUP + rows % GROUP) * HEAD_DIM
    dims = tl.arange(0, HEAD_DIM)
    query = tl.load(query_ptr + head_offset[:, None] + dims[None, :], mask=real[:, None], other=0.0)
    row_position = tl.load(positions_ptr + token, mask=real, other=0)
    last_token = tl.minimum(tl.program_id(2) * ROWS + ROWS - 1, new_tokens * GROUP - 1) // GROUP
    last = tl.load(positions_ptr + session * new_tokens + last_token)  # no row of this block sees past it
    chunk = tl.cdiv(tl.cdiv(last + 1, tl.num_programs(1)), BLOCK_N) * BLOCK_N  # this block's share of keys
    start = split * chunk
    stop = tl.minimum(start + chunk, last + 1)
    stride = kv_heads * HEAD_DIM  # between positions in the cache
    base = (tl.load(slots_ptr + session) * max_len * kv_heads + kv) * HEAD_DIM
    running_max = tl.full([ROWS], -1e30, tl.float32)  # finite, so an all-masked block gives no NaN
    running_sum = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], tl.float32)
    for first in range(start, stop, BLOCK_N):
        positions = first + tl.arange(0, BLOCK_N)
        inside = positions < stop
        at = base + positions[:, None] * stride + dims[None, :]
        keys = tl.load(keys_ptr + at, mask=inside[:, None], other=0.0)
        scores = tl.dot(query, tl.trans(keys)) * scale
        visible = inside[None, :] & (positions[None, :] <= row_position[:, None])
        scores = tl.where(visible, scores, float("-inf"))
        new_max = tl.maximum(running_max, tl.max(scores, axis=1))
        weights = tl.exp(scores - new_max[:, None])
        kept = tl.exp(running_max - new_max)
        running_sum = running_sum * kept + tl.sum(weights, axis=1)
        values = tl.load(values_ptr + at, mask=inside[:, None], other=0.0)
        acc = acc * kept[:, None] + tl.dot(weights.to(values.dtype), values)
        running_max = new_max
    if tl.num_programs(1) > 1:  # a runtime branch: a constant would compile a kernel per case
        part = pair * tl.num_programs(1) + split
        tl.store(acc_ptr + (part * all_rows + rows[:, None]) * HEAD_DIM + dims[None, :], acc)
        tl.store(max_ptr + part * all_rows + rows, running_max)
        tl.store(sum_ptr + part * all_rows + rows, running_sum)
    else:
        out = acc / running_sum[:, None]
        tl.store(out_ptr + head_offset[:, None] + dims[None, :], out, mask=real[:, None])


@triton.jit(do_not_specialize=["splits", "new_tokens", "all_rows"])
def _combine(acc_ptr, max_ptr, sum_ptr, out_ptr, splits, new_tokens, heads, kv_heads, all_rows,
             GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr, EARLY: tl.constexpr):  # fmt: skip
    """Merge one query row's partial results over its key ranges (log-sum-exp weights)."""
    wait_for_inputs(EARLY)
    pair = tl.program_id(0).to(tl.int64)
    row = tl.program_id(1)
    session, kv = pair // kv_heads, pair % kv_heads
    parts = tl.arange(0, SPLITS)
    present = parts < splits
    at = (pair * splits + parts) * all_rows + row
    maxima = tl.load(max_ptr + at, mask=present, other=-1e30)
    weights = tl.where(present, tl.exp(maxima - tl.max(maxima, axis=0)), 0.0)
    total = tl.sum(weights * tl.load(sum_ptr + at, mask=present, other=0.0), axis=0)
    dims = tl.arange(0, HEAD_DIM)
    accs = tl.load(acc_ptr + at[:, None] * HEAD_DIM + dims[None, :], mask=present[:, None], other=0.0)
    merged = tl.sum(accs * weights[:, None], axis=0) / total
    token = session * new_tokens + row // GROUP
    tl.store(out_ptr + (token * heads + kv * GROUP + row % GROUP) * HEAD_DIM + dims, merged)


@triton.jit(do_not_specialize=["rows"])  # one binary for every batch: no compile when a new size comes
def _skinny_linear(x_ptr, w_ptr, bias_ptr, out_ptr, rows, n, k, HAS_BIAS: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LINE: tl.constexpr,
                   PREFETCH: tl.constexpr, EARLY: tl.constexpr):  # fmt: skip
    columns = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    if EARLY:  # the weights owe nothing to the kernel before: fetch the strip's start while it ends
        lines = tl.minimum(tl.arange(0, PREFETCH) * LINE, k - 1)
        _prefetch_to_l2(w_ptr + tl.minimum(columns, n - 1).to(tl.int64)[:, None] * k + lines[None, :])
    wait_for_inputs(EARLY)
    row = tl.arange(0, BLOCK_M)
    inner = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    x_at = x_ptr + row[:, None] * k + inner[None, :]
    w_at = w_ptr + columns.to(tl.int64)[:, None] * k + inner[None, :]
    for _ in range(0, k, BLOCK_K):  # k is a multiple of BLOCK_K (checked by the caller)
        x = tl.load(x_at, mask=row[:, None] < rows, other=0.0)
        w = tl.load(w_at, mask=columns[:, None] < n, other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
        x_at += BLOCK_K
        w_at += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(bias_ptr + columns, mask=columns < n, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + row[:, None] * n + columns[None, :], acc, mask=(row[:, None] < rows) & (columns[None, :] < n))


_SKINNY_CONFIGS = [  # strip width, K block, pipelining depth: the best for each shape on an H100 were among these
    triton.Config({"BLOCK_N": width, "BLOCK_K": depth}, num_stages=stages)
    for width, depth, stages in [(32, 128, 4), (32, 128, 6), (32, 256, 4), (32, 256, 6), (64, 128, 3), (16, 256, 6)]
]
_tuned_skinny_linear = (
    triton.autotune(_SKINNY_CONFIGS, key=["n", "k"])(_skinny_linear) if torch.cuda.is_available() else None
)
