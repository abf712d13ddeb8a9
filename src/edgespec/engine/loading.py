"""Loading a model and its tokenizer from an HF folder or a GGUF file, on the right device."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from edgespec.config import ModelConfig, cache_dir
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.engine.torch_engine import TorchEngine

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(Exception):
    """A model path that does not hold a loadable model; the message says what is wrong."""


def resolve_device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {requested!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {requested!r} asked for, but CUDA is not available here")
    return device


def resolve_dtype(requested: str | None, device: torch.device) -> torch.dtype:
    if requested is not None:
        return _DTYPES[requested]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def split_model_path(path: Path) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) after checking the path holds a model."""
    if not path.exists():
        raise ModelLoadError(f"model path {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"model file {str(path)!r} is not a .gguf file; pass a GGUF file or an HF folder")
        return path.parent, path.name
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model folder {str(path)!r} has no config.json; is it a Hugging Face model folder?")
    return path, None


def load_tokenizer(path: Path) -> TokenizerInfo:
    folder, gguf_file = split_model_path(path)
    source = folder if gguf_file is None else saved_gguf_tokenizer(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a tokenizer from {str(path)!r}: {exc}") from None
    return TokenizerInfo(tokenizer=tokenizer, name=path.name, eos_token_ids=_eos_ids(tokenizer, folder))


def saved_gguf_tokenizer(gguf: Path) -> Path:
    """A GGUF file's tokenizer saved as an HF tokenizer folder, built once and cached. Building it
    from the GGUF takes ~15 s for a 150k vocabulary, loading the folder ~1 s; and a saved tokenizer
    fingerprints the same as the one in a folder converted from that GGUF, so an edge and a cloud
    may load the same model either way."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir() / "tokenizers" / f"{gguf.stem[:64]}-{key}"
    if folder.is_dir():
        return folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load a tokenizer from {str(gguf)!r}: {exc}") from None
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=ensure_dir(folder.parent)))
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(folder)
    except OSError:  # another process saved the same tokenizer first
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_model(path: Path, config: ModelConfig) -> PreTrainedModel:
    folder, gguf_file = split_model_path(path)
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        with _progress_bars(shown=gguf_file is not None):  # GGUF dequantizes for a minute; folders load in seconds
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=gguf_file, dtype=resolve_dtype(config.dtype, device)
            )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load a model from {str(path)!r}: {exc}") from None
    return model.to(device)  # type: ignore[arg-type]  # transformers types .to() for dtypes only


@contextlib.contextmanager
def _progress_bars(shown: bool) -> Iterator[None]:
    was_shown = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if shown else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was_shown else hf_logging.disable_progress_bar)()


def load_engine(path: Path, config: ModelConfig) -> tuple[TorchEngine, TokenizerInfo]:
    """The torch engine and tokenizer for a resolved model path."""
    return TorchEngine(load_model(path, config)), load_tokenizer(path)


def ensure_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _eos_ids(tokenizer: object, folder: Path) -> tuple[int, ...]:
    """The tokenizer's EOS plus any the generation config lists (chat models end turns differently)."""
    ids = {tid} if isinstance(tid := getattr(tokenizer, "eos_token_id", None), int) else set()
    gen_config = folder / "generation_config.json"
    if gen_config.is_file():
        eos = json.loads(gen_config.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    return tuple(sorted(ids))
