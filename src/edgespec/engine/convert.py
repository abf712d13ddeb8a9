"""GGUF to HF folder, once: transformers dequantizes GGUF on every load (about a minute for 1.5B
parameters), while the converted safetensors folder loads in seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import PreTrainedModel

from edgespec.config import ModelConfig
from edgespec.engine.loading import ModelLoadError, load_model, load_tokenizer


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Write `out` (safetensors, float32 as dequantized, plus tokenizer); it appears only when complete."""
    if out.exists() and any(out.iterdir()):
        raise ModelLoadError(f"output folder {str(out)!r} already exists and is not empty; remove it or pick another")
    tokenizer = load_tokenizer(gguf)  # checks the path first, so bad input fails before the slow part
    if gguf.suffix != ".gguf":
        raise ModelLoadError(f"{str(gguf)!r} is not a .gguf file")
    print(f"converting {gguf.name} to {out} (dequantizing; takes a minute or two, once)", flush=True)
    model = load_model(gguf, ModelConfig(str(gguf), device="cpu", dtype="float32"))
    _forget_gguf_origin(model)
    staging = out.with_name(out.name + ".converting")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.tokenizer.save_pretrained(staging)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.replace(out)
    return out


def _forget_gguf_origin(model: PreTrainedModel) -> None:
    """The loaded weights are plain dequantized tensors, but transformers still tags the model as
    GGUF-quantized and refuses to save it; drop the tag so it saves as an ordinary model."""
    setattr(model, "hf_quantizer", None)  # noqa: B010 (the attribute is typed as a module)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
