"""`bench verifier --prompts N,...`: a session's prompt on the cloud, alone, from the engine's call
to its first token on the host, against the prompt's floor (its FLOPs over the measured matrix
rate, or for a short prompt the weights' bytes over the measured bandwidth). Prompts of up to
512 tokens replay a graph; longer ones run eagerly (engine/static_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers

from edgespec.bench.verifier import Ceilings, floor_ms, wall_median_ms
from edgespec.engine.static_engine import StaticEngine


@dataclass(frozen=True)
class PromptCell:
    tokens: int
    ms: float
    floor_ms: float
    bound: str

    @property
    def ratio(self) -> float:
        return self.ms / self.floor_ms


def time_prompts(
    engine: StaticEngine, model: transformers.PreTrainedModel, ceilings: Ceilings, lengths: list[int], repeats: int
) -> list[PromptCell]:
    cells = []
    for length in lengths:
        tokens = torch.randint(0, 1000, (length,)).tolist()

        def prompt(tokens: list[int] = tokens) -> None:
            session = engine.new_session()
            engine.forward(session, tokens, 1).argmax().item()  # the first token, read as the cloud reads it
            engine.release(session)

        floor, bound = floor_ms(model, ceilings, 1, length, 0)
        cells.append(PromptCell(length, wall_median_ms(prompt, repeats), floor, bound))
        _print_cell(cells[-1])
    return cells


def _print_cell(cell: PromptCell) -> None:
    floor = f"floor {cell.floor_ms:6.2f} ({cell.bound:7s})  x{cell.ratio:5.2f}"
    print(f"prompt of {cell.tokens:5d} tokens  {cell.ms:7.2f} ms  {floor}", flush=True)
