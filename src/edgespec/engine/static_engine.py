"""The GPU fast path for a target: the compact forward over a static KV cache, with each verify
shape replayed from a CUDA graph. On a CPU the same code runs eagerly (that is how CI checks it
against the transformers model).

A batch of sessions is padded to fixed shapes so a few graphs serve every batch: the number of
sessions up to a power of two (padding sessions use a scratch slot), new tokens per session to the
batch's longest (padding tokens sit past each session's real ones and are never read), and, for
the unfused step only, the attention span up to a power of two (the fused kernels read each
session's own length inside the graph). A spare slot is kept as scratch for that padding, and
positions past the context limit for capturing. A prompt is padded alone to one of a few sizes
(prompt_size) and replays a graph of its own. Only the rows whose logits are asked for reach the vocabulary head."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator

import torch
from transformers import PreTrainedModel

from edgespec.engine.base import KVSession, Work
from edgespec.engine.compact_model import CompactModel
from edgespec.engine.cuda_graphs import PROMPT_LOGIT_ROWS, GraphKey, Step, VerifyGraphs, bucket, pack
from edgespec.engine.sharding import Parallel, shard
from edgespec.engine.slots import SlotPool
from edgespec.engine.static_kv import StaticKV

GRAPH_MAX_TOKENS = 16  # new tokens per session that a round's graphs serve; more is a prompt
ROUNDS_CAPTURED_AHEAD = (1, 5)  # new tokens of a decode step and of a block of the edges' default k = 4
# Prompts up to this long replay graphs too, padded to one of eight sizes per doubling (at most an
# eighth of their rows are padding): run eagerly, a short prompt's few hundred kernel launches
# take longer on the host than its kernels on the GPU (200 tokens on an H100: 19.3 ms eagerly, 9.1
# from a graph). Longer prompts' kernels outlast their launches on a quiet host (500 tokens: 14.0
# and 13.9 ms), but a cloud's host is seldom quiet: its event loop serves the other sessions'
# traffic, and eager launches wait for the GIL. Under `bench capacity` (H100), a call holding a
# 512-token prompt with its first block (516 rows) took 27-33 ms eagerly, 24 ms from a graph.
PROMPT_GRAPH_MAX_TOKENS = 1024
CPU_KV_BUDGET = 1 << 30
GPU_KV_SHARE = 0.5  # of the memory free once the weights are in
NUMERICS = "torch static KV: transformers' arithmetic; exact in float32; in bf16 rounding varies with batch shape"


def is_prefill(work: Work) -> bool:
    """More new tokens than a round's graph serves: a prompt, run on its own."""
    return len(work.tokens) > GRAPH_MAX_TOKENS


def prompt_size(n: int) -> int:
    """The padded size of an n-token prompt: n rounded up to an eighth of the power of two below it."""
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


class StaticEngine:
    numerics = NUMERICS

    def __init__(
        self,
        model: PreTrainedModel,
        max_sessions: int = 64,
        max_context: int = 4096,
        kv_budget: int | None = None,
        fused: bool = True,  # on a GPU, the step's small operations in Triton kernels (fused_forward.py)
        parallel: Parallel | None = None,  # this rank's shard of a tensor-parallel model
    ) -> None:
        self.model = CompactModel(model)
        if parallel is not None:
            shard(self.model, parallel)
        self.device = self.model.embed.device
        self.vocab_size = self.model.vocab_size
        self.max_context = min(max_context, int(getattr(model.config, "max_position_embeddings", max_context)))
        shape = self.model.shape
        per_slot = 2 * shape.layers * shape.kv_heads * (self.max_context + GRAPH_MAX_TOKENS) * shape.head_dim
        per_slot *= self.model.embed.element_size()
        self.max_sessions = max(1, min(max_sessions, (kv_budget or self._default_budget()) // per_slot - 1))
        if parallel is not None:
            self.max_sessions = _fewest(self.max_sessions, parallel, self.device)
        self._scratch_slot = self.max_sessions
        self.kv = StaticKV(
            shape.layers,
            self.max_sessions + 1,
            shape.kv_heads,
            self.max_context + GRAPH_MAX_TOKENS,
            shape.head_dim,
            self.model.embed.dtype,
            self.device,
        )
        self._slots = SlotPool(self.max_sessions, "KV slots", RuntimeError)
        on_gpu = self.device.type == "cuda"
        self._fused = fused and on_gpu
        with self._on_own_gpu():  # the fused step tunes its kernels now
            self._step = self._chosen_step(self._fused)
        self.graphs = VerifyGraphs(self._step, self.kv, self._scratch_slot) if on_gpu else None
        self.batch_tokens = self.max_sessions * GRAPH_MAX_TOKENS
        self._closed = False

    def _on_own_gpu(self) -> contextlib.AbstractContextManager[object]:
        """This engine's GPU made current for a call. Triton launches kernels on the current GPU,
        not the tensors', and which GPU is current is per thread: the first, in a thread that did
        not choose (the model worker's), whatever GPU the engine is on."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _chosen_step(self, fused: bool) -> Step:
        if not fused:
            return self.model.forward
        from edgespec.engine.fused_forward import fused_forward, prepare  # Triton: GPU installs only

        prepare(self.model)
        return functools.partial(fused_forward, self.model)

    def capture_ahead(self, new_tokens: Iterable[int] = ROUNDS_CAPTURED_AHEAD) -> None:
        """Meet now every shape a cloud serves, each of which would otherwise stall every waiting
        session at its first use: capture, for every batch size, the graphs of rounds of these
        sizes (a decode step is 1 new token, a block of k drafted tokens k + 1) and the graph of
        every prompt size (~0.1 s each); run every other round size once, for one session and
        uncaptured, so its kernels are compiled (~0.5 s each on first use) and its graphs,
        captured when first met, cost 0.05–0.1 s each. The kernels depend on a round's size, not on
        the batch or any length (kernels.py): after that nothing compiles a kernel, not even a
        long prompt, which runs eagerly. Fused path only: the unfused graphs also depend on the
        context."""
        if self.graphs is None or not self._fused:
            return
        graphs = self.graphs
        with self._on_own_gpu(), torch.inference_mode():  # as in forward_many, where graphs are met later
            for key in self._keys_ahead(new_tokens):
                graphs.ready(key)
            for q in range(1, GRAPH_MAX_TOKENS + 1):
                if (key := GraphKey(1, q, self.kv.max_len)) not in graphs:
                    graphs.compile(key)

    def _keys_ahead(self, new_tokens: Iterable[int]) -> Iterator[GraphKey]:
        largest = bucket(self.max_sessions, 1)
        for q in new_tokens:
            for batch in (2**i for i in range(largest.bit_length())):  # 1, 2, 4, ... largest
                yield GraphKey(batch, q, self.kv.max_len)
        for size in sorted({prompt_size(n) for n in range(GRAPH_MAX_TOKENS + 1, PROMPT_GRAPH_MAX_TOKENS + 1)}):
            if size <= self.kv.max_len:
                yield GraphKey(1, size, self.kv.max_len, padded=True)

    def _default_budget(self) -> int:
        if self.device.type != "cuda":
            return CPU_KV_BUDGET
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free * GPU_KV_SHARE)

    def new_session(self) -> KVSession:
        return KVSession(cache=None)  # its slot is taken at its first forward (slots.py)

    def forward(self, session: KVSession, tokens: list[int], n_logits: int) -> torch.Tensor:
        return self.forward_many([Work(session, tokens, n_logits)])[0]

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        if self._closed:  # without its graphs it would still answer, eagerly and many times slower
            raise RuntimeError("the engine is closed")
        with self._on_own_gpu():
            return self._forward_many(works)

    @torch.inference_mode()
    def _forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        for work in works:
            if len(work.session.tokens) + len(work.tokens) > self.max_context:
                raise ValueError(f"a session would exceed the context of {self.max_context} tokens")
            self._slots.take(work.session)
        # Rounds go through a graph together; a prompt among them (a session opening) runs on its
        # own, without taking the others off the graph. On a CPU: one at a time.
        on_graph = self.graphs is not None
        replayed = [i for i, work in enumerate(works) if on_graph and not is_prefill(work)]
        from_graph = dict(zip(replayed, self._replayed([works[i] for i in replayed]), strict=True)) if replayed else {}
        logits = [from_graph[i] if i in from_graph else self._alone(work) for i, work in enumerate(works)]
        for work in works:
            work.session.tokens.extend(work.tokens)
        return logits

    def _alone(self, work: Work) -> torch.Tensor:
        """Logits of the work's last n_logits tokens, from a prompt's graph where one serves."""
        size, start = prompt_size(len(work.tokens)), len(work.session.tokens)
        fits = size <= PROMPT_GRAPH_MAX_TOKENS and start + size <= self.kv.max_len
        if self.graphs is None or not self._fused or not fits or work.n_logits > PROMPT_LOGIT_ROWS:
            return self._eager(work)
        padded = work.tokens + [0] * (size - len(work.tokens))  # cached past the prompt, overwritten unread
        packed = pack([int(work.session.cache)], [start], [padded], ends=[len(work.tokens)])
        logits = self.graphs.run(GraphKey(1, size, self.kv.max_len, padded=True), packed)[0, -work.n_logits :]
        return logits.clone()  # the next prompt of this size, in this batch too, replays into the same rows

    def _eager(self, work: Work) -> torch.Tensor:
        tokens, positions = self._inputs([work], len(work.tokens))
        span = len(work.session.tokens) + len(work.tokens)
        slots = torch.tensor([work.session.cache], device=self.device)
        return self._step(self.kv, slots, tokens, positions, span, work.n_logits, None)[0]

    def _replayed(self, works: list[Work]) -> list[torch.Tensor]:
        assert self.graphs is not None
        batch, q = bucket(len(works), 1), max(len(work.tokens) for work in works)  # padded tokens would cost FLOPs
        span = self._graph_span(works)
        pad = batch - len(works)
        slots = [int(work.session.cache) for work in works] + [self._scratch_slot] * pad
        # padding sessions start at 0 of the spare slot: their attention reads only their own few keys
        starts = [len(work.session.tokens) for work in works] + [0] * pad
        tokens = [work.tokens + [0] * (q - len(work.tokens)) for work in works] + [[0] * q] * pad
        logits = self.graphs.run(GraphKey(batch, q, span), pack(slots, starts, tokens))
        real = zip(works, logits[: len(works)], strict=True)
        return [rows[len(work.tokens) - work.n_logits : len(work.tokens)] for work, rows in real]

    def _graph_span(self, works: list[Work]) -> int:
        """The keys a graph's attention spans. The fused kernel stops at each session's own length,
        so one graph serves every context; the unfused step attends over a fixed span."""
        if self._fused:
            return self.kv.max_len
        return min(bucket(max(len(w.session.tokens) + len(w.tokens) for w in works), 256), self.kv.max_len)

    def _inputs(self, works: list[Work], q: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and positions [B, q]; a session with fewer new tokens is padded after them."""
        rows, places = [], []
        for work in works:
            start = len(work.session.tokens)
            rows.append(work.tokens + [0] * (q - len(work.tokens)))
            places.append(list(range(start, start + q)))
        return torch.tensor(rows, device=self.device), torch.tensor(places, device=self.device)

    def truncate(self, session: KVSession, length: int) -> None:
        del session.tokens[length:]  # the cache past `length` is simply overwritten later

    def release(self, session: KVSession) -> None:
        self._slots.give_back(session)  # what the slot holds is overwritten by its next session
        session.tokens.clear()

    def close(self) -> None:
        self.graphs = None
        self._closed = True


def _fewest(sessions: int, parallel: Parallel, device: torch.device) -> int:
    """The fewest sessions any rank's memory holds. Every rank must hold the same sessions in the
    same slots and capture the same graphs (their collectives meet); free memory, and with it the
    slots that fit, can differ a little from one GPU to the next."""
    every_rank = parallel.all_gather(torch.tensor([sessions], device=device))
    return int(every_rank.min())
