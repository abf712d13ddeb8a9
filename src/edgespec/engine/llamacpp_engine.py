"""The llama.cpp backend (llama-cpp-python's C API): GGUF weights run as shipped, quantized, several
times faster than float32 PyTorch on a CPU, loading in seconds.

One llama.cpp context holds every session of this model as its own sequence (seq_id) in one
unified KV cache, so several sessions can be computed in a single decode call. Truncation removes
a sequence's positions past a length, which is exact: recomputing the same tokens afterwards gives
the same bits. What is not exact is batch shape: quantized kernels accumulate differently for 1,
4 or 9 rows, so logits differ slightly (up to ~0.5 on the demo pair) with the number of tokens in
a call, and a greedy choice on a near-tie can differ from one-token decoding. docs/engines.md
states this; `numerics` says it to the API.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgespec.engine.base import KVSession, Work
from edgespec.engine.slots import SlotPool

log = logging.getLogger("edgespec.llamacpp")

MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ
NUMERICS = "llama.cpp: quantized kernels; logits depend on batch shape, greedy ties may break differently"
BATCH_TOKENS = 512  # tokens per decode call; longer prompts are fed in pieces


class LlamaCppError(Exception):
    """llama.cpp refused a model or a decode; the message says which."""


@dataclass(frozen=True)
class LlamaCppOptions:
    threads: int | None = None  # None: llama.cpp's default (all cores)
    kv_tokens: int = 16384  # KV positions shared by all sessions
    max_sessions: int = 64


def _quiet_logs(level: int, text: bytes, _: ctypes.c_void_p) -> None:
    if level >= 4:  # GGML_LOG_LEVEL_ERROR; the rest is chatter on every load
        log.error(text.decode(errors="replace").rstrip())


_callbacks: dict[str, object] = {}  # C keeps pointers to these for the life of the process


def _set_up_library() -> None:
    """Once per process: route llama.cpp's logging through ours and silence its load progress."""
    import llama_cpp

    if _callbacks:
        return
    _callbacks["log"] = llama_cpp.llama_log_callback(_quiet_logs)
    _callbacks["progress"] = llama_cpp.llama_progress_callback(lambda _progress, _data: True)
    llama_cpp.llama_log_set(_callbacks["log"], ctypes.c_void_p())
    llama_cpp.llama_backend_init()


class LlamaCppEngine:
    numerics = NUMERICS
    batch_tokens = BATCH_TOKENS

    def __init__(self, gguf: Path, options: LlamaCppOptions = LlamaCppOptions()) -> None:
        import llama_cpp  # the optional extra: imported only when this backend is chosen

        self._lib = llama_cpp
        _set_up_library()
        model_params = llama_cpp.llama_model_default_params()
        model_params.progress_callback = _callbacks["progress"]
        self._model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not self._model:
            raise LlamaCppError(f"llama.cpp cannot load {str(gguf)!r}")
        self._ctx = llama_cpp.llama_init_from_model(self._model, self._context_params(options))
        if not self._ctx:
            raise LlamaCppError(f"llama.cpp cannot make a context for {str(gguf)!r} ({options})")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.max_sessions = min(options.max_sessions, MAX_SEQUENCES)
        self._sequences = SlotPool(self.max_sessions, "llama.cpp sequences", LlamaCppError)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self._model)))
        self.max_context = min(int(llama_cpp.llama_model_n_ctx_train(self._model)), options.kv_tokens)
        self.device = torch.device("cpu")

    def _context_params(self, options: LlamaCppOptions) -> object:
        params = self._lib.llama_context_default_params()
        params.n_ctx = options.kv_tokens
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = min(options.max_sessions, MAX_SEQUENCES)
        params.kv_unified = True  # every session may use any share of the KV positions
        if options.threads is not None:
            params.n_threads = params.n_threads_batch = options.threads
        return params

    def new_session(self) -> KVSession:
        return KVSession(cache=None)  # its sequence id is taken at its first forward (slots.py)

    def forward(self, session: KVSession, tokens: list[int], n_logits: int) -> torch.Tensor:
        """Logits [n_logits, vocab] of the last positions after running `tokens`."""
        while len(tokens) > BATCH_TOKENS:  # a long prompt: all but the last piece need no logits
            self.forward_many([Work(session, tokens[:BATCH_TOKENS], 0)])
            tokens = tokens[BATCH_TOKENS:]
        return self.forward_many([Work(session, tokens, n_logits)])[0]

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        """Several sessions' new tokens in one decode call (at most BATCH_TOKENS in all)."""
        rows = self._fill_batch(works)
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise LlamaCppError(f"llama_decode failed with status {status} (KV full or bad batch)")
        for work in works:
            work.session.tokens.extend(work.tokens)
        return [self._logits(work_rows) for work_rows in rows]

    def _fill_batch(self, works: list[Work]) -> list[list[int]]:
        """Writes the batch; returns, per work, the batch rows whose logits it wants."""
        if sum(len(work.tokens) for work in works) > BATCH_TOKENS:
            raise LlamaCppError(f"a decode call holds at most {BATCH_TOKENS} tokens")
        batch, row, rows = self._batch, 0, []
        for work in works:
            start, wanted, sequence = len(work.session.tokens), [], self._sequences.take(work.session)
            for offset, token in enumerate(work.tokens):
                batch.token[row] = token
                batch.pos[row] = start + offset
                batch.n_seq_id[row] = 1
                batch.seq_id[row][0] = sequence
                batch.logits[row] = offset >= len(work.tokens) - work.n_logits
                if batch.logits[row]:
                    wanted.append(row)
                row += 1
            rows.append(wanted)
        batch.n_tokens = row
        return rows

    def _logits(self, rows: list[int]) -> torch.Tensor:
        logits = np.empty((len(rows), self.vocab_size), dtype=np.float32)
        for i, row in enumerate(rows):
            pointer = self._lib.llama_get_logits_ith(self._ctx, row)
            logits[i] = np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))
        return torch.from_numpy(logits)

    def truncate(self, session: KVSession, length: int) -> None:
        if length < len(session.tokens) and session.cache is not None:
            self._lib.llama_memory_seq_rm(self._memory, session.cache, length, -1)
            del session.tokens[length:]

    def release(self, session: KVSession) -> None:
        sequence = self._sequences.give_back(session)
        if sequence is not None:
            self._lib.llama_memory_seq_rm(self._memory, sequence, -1, -1)
        session.tokens.clear()

    def close(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        self._lib.llama_model_free(self._model)
