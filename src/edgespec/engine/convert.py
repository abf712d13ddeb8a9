"""GGUF to HF folder, once: transformers dequantizes GGUF on every load (about a minute for 1.5B
parameters), while the converted safetensors folder loads in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from edgespec.engine.fetch import mark_complete
from edgespec.engine.loading import ModelLoadError


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Write `out` (safetensors, float32 as dequantized, plus tokenizer); atomic on success."""
    if not gguf.is_file() or gguf.suffix != ".gguf":
        raise ModelLoadError(f"{str(gguf)!r} is not a .gguf file")
    staging = out.with_name(out.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"converting {gguf.name} to {out} (dequantizing; takes a minute or two, once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _forget_gguf_origin(model)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    del model
    mark_complete(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.replace(out)
    return out


def _forget_gguf_origin(model: PreTrainedModel) -> None:
    """The loaded weights are plain dequantized tensors, but transformers still tags the model as
    GGUF-quantized and refuses to save it; drop the tag so it saves as an ordinary model."""
    setattr(model, "hf_quantizer", None)  # noqa: B010 (the attribute is typed as a module)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
