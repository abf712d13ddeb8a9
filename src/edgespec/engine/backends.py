"""Choosing and opening a model's backend. torch (transformers model code) runs HF folders and
GGUF files, exactly, on CPUs and GPUs; static is the GPU fast path (a compact forward of the
Llama family over a static KV cache, replayed from CUDA graphs; eager and exact on a CPU);
llama.cpp runs GGUF files as shipped, quantized, several times faster on a CPU. `auto` picks
static on a GPU, llama.cpp for a GGUF model on a CPU when it is installed (`pip install
'edgespec[llamacpp]'`), torch otherwise."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgespec.config import ModelConfig
from edgespec.engine.fetch import ModelFetchError, ensure_gguf, resolve_model_path
from edgespec.engine.registry import ALIASES

if TYPE_CHECKING:  # the heavy modules (torch, transformers) load only when a model does
    from edgespec.engine.base import Engine
    from edgespec.engine.tensor_parallel import RankLost
    from edgespec.engine.tokenizer import TokenizerInfo

LLAMACPP_HINT = "install it with: pip install 'edgespec[llamacpp]' (builds llama.cpp, about 8 minutes on 2 cores)"


def llamacpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def choose_backend(config: ModelConfig) -> str:
    from edgespec.engine.loading import ModelLoadError, resolve_device

    if config.engine == "llamacpp" and not llamacpp_installed():
        raise ModelLoadError(f"--engine llamacpp needs llama-cpp-python; {LLAMACPP_HINT}")
    if config.engine != "auto":
        return config.engine
    if resolve_device(config.device).type == "cuda":
        return "static"
    return "llamacpp" if _is_gguf(config.name) and llamacpp_installed() else "torch"


def open_model(config: ModelConfig, max_sessions: int = 64, kv_tokens: int = 16384) -> tuple[Engine, TokenizerInfo]:
    """The model's engine and tokenizer, on the chosen backend; aliases are fetched as needed
    (llama.cpp takes the GGUF as shipped, torch a folder converted from it once)."""
    from edgespec.engine.loading import ModelLoadError, load_engine, load_model, load_tokenizer

    backend = choose_backend(config)
    if backend == "torch":
        return load_engine(resolve_model_path(config.name), config)
    if backend == "static":
        from edgespec.engine.static_engine import StaticEngine

        path = resolve_model_path(config.name)
        try:
            static = StaticEngine(load_model(path, config), max_sessions)
            static.capture_ahead()
            return static, load_tokenizer(path)
        except ValueError as exc:  # an architecture the compact forward does not cover
            raise ModelLoadError(f"{exc}; use --engine torch") from None
    from edgespec.engine.llamacpp_engine import LlamaCppEngine, LlamaCppError, LlamaCppOptions

    gguf = _gguf_path(config.name)
    threads = config.threads or len(os.sched_getaffinity(0))  # llama.cpp's default of 4 oversubscribes small CPUs
    try:
        engine = LlamaCppEngine(gguf, LlamaCppOptions(threads, kv_tokens, max_sessions))
    except LlamaCppError as exc:
        raise ModelLoadError(str(exc)) from None
    return engine, load_tokenizer(gguf)


def open_parallel(
    config: ModelConfig, world: int, max_sessions: int, on_rank_lost: RankLost | None = None
) -> tuple[Engine, TokenizerInfo]:
    """The target split over `world` ranks: the others start as processes of their own, this one
    is rank 0 (engine/tensor_parallel.py). If one of them dies, `on_rank_lost` is called; by
    default this process exits."""
    from edgespec.engine.loading import load_tokenizer
    from edgespec.engine.tensor_parallel import (
        MirroredEngine,
        Rank,
        RankWatch,
        exit_on_rank_lost,
        sharded_engine,
        start_followers,
    )
    from edgespec.processes import free_port

    path = resolve_model_path(config.name)  # a bad path fails here, once, not in every rank
    rank = Rank(0, world, free_port())
    followers = start_followers(config, world, rank.port, max_sessions)
    watch = RankWatch(followers, on_rank_lost or exit_on_rank_lost)
    return MirroredEngine(sharded_engine(config, rank, max_sessions), followers, watch), load_tokenizer(path)


def prepare_model(config: ModelConfig) -> None:
    """Fetch now what the chosen backend will load: an alias's GGUF (torch also converts it once)."""
    if choose_backend(config) == "llamacpp":
        _gguf_path(config.name)
    else:
        resolve_model_path(config.name)


def _is_gguf(name: str) -> bool:
    return name in ALIASES or name.endswith(".gguf")


def _gguf_path(name: str) -> Path:
    if name in ALIASES:
        return ensure_gguf(ALIASES[name])
    path = Path(name).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ModelFetchError(f"llama.cpp runs .gguf files; {name!r} is not one (use --engine torch for HF folders)")
    return path
