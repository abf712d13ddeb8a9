"""`edgespec bench verifier`: the cloud's verify step on a GPU against the hardware floor. It
builds an architecture with random weights on the GPU (no weights reach that machine), measures
the copy bandwidth and the bf16 matrix rate in the same run, then for every cell (batch, draft
length k, context) times one verify step of the static engine — B sessions, k+1 new tokens each,
the verdict read back to the host — and transformers eager with a DynamicCache for comparison.
k = 0 is the plain decode step of cloud mode. The floor of a cell is the larger of: weights plus
the KV the step reads over the measured bandwidth; its FLOPs over the measured matrix rate.
`--prompts` also times a session's prompt alone for each length given (verifier_prompts.py).

Runs from `src/` with only torch and transformers: `python -m edgespec.bench.verifier ...`."""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import transformers

from edgespec.bench.verifier_profile import print_profile
from edgespec.engine import kernels
from edgespec.engine.base import Work
from edgespec.engine.static_engine import StaticEngine
from edgespec.sampling.probs import greedy_rows

ARCHITECTURES: dict[str, tuple[str, dict[str, object]]] = {
    "qwen3-8b": ("Qwen3", {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                           "vocab_size": 151936, "rope_theta": 1e6, "max_position_embeddings": 40960}),
    "qwen3-32b": ("Qwen3", {"hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
                            "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
                            "vocab_size": 151936, "rope_theta": 1e6, "max_position_embeddings": 40960}),
    "llama3-8b": ("Llama", {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                            "rope_theta": 500000.0, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5}),
    "tiny-qwen3": ("Qwen3", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                             "vocab_size": 2048}),  # smoke tests of the benchmarks themselves
    "qwen2.5-1.5b": ("Qwen2", {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                               "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                               "rope_theta": 1e6, "max_position_embeddings": 32768, "tie_word_embeddings": True}),
}  # fmt: skip


@dataclass(frozen=True)
class Ceilings:
    copy_bytes_per_s: float  # bytes read plus written
    matmul_flops_per_s: float  # bf16


@dataclass(frozen=True)
class Cell:
    batch: int
    k: int
    context: int
    ms: float
    eager_ms: float | None
    floor_ms: float
    bound: str  # "memory" or "compute": which term sets the floor

    @property
    def ratio(self) -> float:
        return self.ms / self.floor_ms

    @property
    def verified_tokens_per_s(self) -> float:
        return self.batch * (self.k + 1) / (self.ms / 1000)


def random_model(arch: str, device: torch.device, shard: int = 1) -> transformers.PreTrainedModel:
    """The architecture with random weights; with `shard` N, one tensor-parallel rank's share of
    it: 1/N of the heads and MLP features (the same shapes engine/sharding.py cuts out)."""
    family, fields = ARCHITECTURES[arch]
    if shard > 1:
        head_dim = fields.get("head_dim") or int(fields["hidden_size"]) // int(fields["num_attention_heads"])  # type: ignore[call-overload]
        fields = (
            fields
            | {"head_dim": head_dim}
            | {
                name: int(fields[name]) // shard  # type: ignore[call-overload]
                for name in ("num_attention_heads", "num_key_value_heads", "intermediate_size")
            }
        )
    config = getattr(transformers, f"{family}Config")(**fields)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: float32 first would not fit a 32B
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = getattr(transformers, f"{family}ForCausalLM")(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def measure_ceilings(device: torch.device) -> Ceilings:
    source = torch.randn(1 << 30, dtype=torch.bfloat16, device=device)  # 2 GiB, far past L2
    target = torch.empty_like(source)
    copy_s = _median_s(lambda: target.copy_(source), repeats=10)
    a, b = (torch.randn(8192, 8192, dtype=torch.bfloat16, device=device) for _ in range(2))
    matmul_s = _median_s(lambda: a @ b, repeats=10)
    return Ceilings(2 * source.numel() * 2 / copy_s, 2 * 8192**3 / matmul_s)


def _median_s(step: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def floor_ms(
    model: transformers.PreTrainedModel, ceilings: Ceilings, batch: int, q: int, context: int, head_ranks: int = 1
) -> tuple[float, str]:
    """`head_ranks`: how many ranks share the output head by vocabulary (each reads its slice)."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    head = model.get_output_embeddings().weight  # read even when tied to the (unread) embedding
    weights = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and p is not head)
    weights += head.numel() // head_ranks
    kv_elements = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * batch * (context + q)
    memory_s = 2 * (weights + kv_elements) / ceilings.copy_bytes_per_s
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * batch * q * (context + q)
    compute_s = (2 * weights * batch * q + attention) / ceilings.matmul_flops_per_s
    return max(memory_s, compute_s) * 1000, "memory" if memory_s >= compute_s else "compute"


def static_step(engine: StaticEngine, sessions: list, context: int, q: int) -> Callable[[], None]:
    """One verify step over the sessions, the verdict read back, then rolled back."""
    draft = list(range(1000, 1000 + q))

    def step() -> None:
        logits = engine.forward_many([Work(s, draft, q) for s in sessions])
        greedy_rows(logits)  # the verdict's one sync, as the cloud reads it
        for s in sessions:
            engine.truncate(s, context)

    return step


def time_static(engine: StaticEngine, sessions: list, context: int, q: int, repeats: int) -> float:
    """Median wall time of one verify step over the sessions, verdict read back included."""
    return wall_median_ms(static_step(engine, sessions, context, q), repeats)


def time_eager(model: transformers.PreTrainedModel, batch: int, context: int, q: int, repeats: int) -> float:
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = transformers.DynamicCache(config=model.config)
    prompt = torch.randint(0, 1000, (batch, context), device=model.device)
    model(input_ids=prompt, use_cache=True, **{keyword: cache})
    draft = torch.arange(1000, 1000 + q, device=model.device).expand(batch, q)

    def step() -> None:
        out = model(input_ids=draft, use_cache=True, **{keyword: cache})
        out.logits.argmax(dim=-1).tolist()
        cache.crop(-q)

    return wall_median_ms(step, repeats)


def wall_median_ms(step: Callable[[], None], repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


CHECKED_CONTEXTS, CHECKED_NEW_TOKENS = [100, 37, 260], 5  # the check's sessions, whatever the cells


@torch.inference_mode()
def check_against_transformers(model: transformers.PreTrainedModel, engine: StaticEngine) -> dict[str, float]:
    """Correct first: three sessions at different lengths verified in one replayed graph, against
    the transformers model over each whole sequence (bf16 both: expect ~1e-2 relative error)."""
    lengths, q = CHECKED_CONTEXTS, CHECKED_NEW_TOKENS
    sessions = [engine.new_session() for _ in lengths]
    sequences = [torch.randint(0, 1000, (n + q,)).tolist() for n in lengths]
    for session, sequence, n in zip(sessions, sequences, lengths, strict=True):
        engine.forward(session, sequence[:n], 1)
    ours = engine.forward_many([Work(s, seq[-q:], q) for s, seq in zip(sessions, sequences, strict=True)])
    errors, agree, own_noise = [], [], []
    for rows, sequence, n in zip(ours, sequences, lengths, strict=True):
        theirs = model(input_ids=torch.tensor([sequence], device=model.device)).logits[0, -q:].float()
        errors.append(_relative(rows, theirs))
        agree.append(float((rows.argmax(-1) == theirs.argmax(-1)).float().mean()))
        own_noise.append(_relative(_incremental(model, sequence, n), theirs))
    for session in sessions:
        engine.release(session)
    return {"relative_error": max(errors), "argmax_agreement": min(agree), "transformers_own_error": max(own_noise)}


def _incremental(model: transformers.PreTrainedModel, sequence: list[int], n: int) -> torch.Tensor:
    """transformers itself over the same tokens in two calls (a cache between): its bf16 noise."""
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = transformers.DynamicCache(config=model.config)
    ids = torch.tensor([sequence], device=model.device)
    model(input_ids=ids[:, :n], use_cache=True, **{keyword: cache})
    return model(input_ids=ids[:, n:], use_cache=True, **{keyword: cache}).logits[0].float()


def _relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).norm() / theirs.norm())


def run(
    arch: str, batches: list[int], ks: list[int], contexts: list[int], eager: bool, repeats: int, fused: bool,
    profile: bool, prompts: list[int],
) -> dict:  # fmt: skip
    device = torch.device("cuda")
    ceilings = measure_ceilings(device)
    print(f"{torch.cuda.get_device_name()}: copy {ceilings.copy_bytes_per_s / 1e12:.2f} TB/s, "
          f"bf16 matmul {ceilings.matmul_flops_per_s / 1e12:.0f} TFLOP/s", flush=True)  # fmt: skip
    model = random_model(arch, device)
    span = max(max([*contexts, *prompts]) + max(ks) + 1, max(CHECKED_CONTEXTS) + CHECKED_NEW_TOKENS)
    engine = StaticEngine(model, max(*batches, 3), span, kv_budget=1 << 40, fused=fused)  # the check takes 3
    check = check_against_transformers(model, engine)
    print(f"check against transformers: relative error {check['relative_error']:.2e} (transformers against "
          f"itself in two calls: {check['transformers_own_error']:.2e}), argmax agreement "
          f"{check['argmax_agreement']:.2f}", flush=True)  # fmt: skip
    cells = []
    with torch.inference_mode():
        for context in contexts:
            sessions = [engine.new_session() for _ in range(max(batches))]
            for s in sessions:
                engine.forward(s, torch.randint(0, 1000, (context,)).tolist(), 1)
            for batch in batches:
                for k in ks:
                    step = static_step(engine, sessions[:batch], context, k + 1)
                    ms = wall_median_ms(step, repeats)
                    if profile:
                        print_profile(step, f"batch {batch}, k {k}, context {context}")
                    eager_ms = time_eager(model, batch, context, k + 1, max(repeats // 4, 3)) if eager else None
                    floor, bound = floor_ms(model, ceilings, batch, k + 1, context)
                    cells.append(Cell(batch, k, context, ms, eager_ms, floor, bound))
                    _print_cell(cells[-1])
            for s in sessions:
                engine.release(s)
    from edgespec.bench.verifier_prompts import time_prompts  # it builds on this module

    prompt_cells = time_prompts(engine, model, ceilings, prompts, repeats)
    return {"arch": arch, "device": torch.cuda.get_device_name(), "ceilings": asdict(ceilings), "check": check,
            "fused": fused, "early_launch": kernels.LAUNCH_EARLY, "graphs": len(engine.graphs or []),
            "cells": [asdict(c) | {"ratio": c.ratio} for c in cells],
            "prompts": [asdict(c) | {"ratio": c.ratio} for c in prompt_cells]}  # fmt: skip


def _print_cell(cell: Cell) -> None:
    eager = f"{cell.eager_ms:8.2f}" if cell.eager_ms is not None else "       -"
    shape = f"batch {cell.batch:3d}  k {cell.k:2d}  ctx {cell.context:5d}"
    floor = f"floor {cell.floor_ms:6.2f} ({cell.bound:7s})  x{cell.ratio:5.2f}"
    print(f"{shape}  {cell.ms:7.2f} ms  {floor}  {cell.verified_tokens_per_s:9.0f} tok/s  eager {eager} ms", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="qwen3-8b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--random-weights", action="store_true", help="the only kind there is on the GPU machine")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--k", default="0,1,4,8", help="draft lengths; 0 is the plain decode step")
    parser.add_argument("--context", default="512,2048")
    parser.add_argument("--prompts", default="", help="TP 1: also time prompts of these lengths alone")
    parser.add_argument("--no-eager", action="store_true", help="skip the transformers eager comparison")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--unfused", action="store_true", help="the step without its Triton kernels, to compare")
    parser.add_argument("--profile", action="store_true", help="print each cell's costliest GPU kernels")
    parser.add_argument("--out", help="write the cells as JSON here")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="split the model over this many GPUs")
    parser.add_argument("--no-early-launch", action="store_true",
                        help="launch each kernel only once the one before has ended, to compare")  # fmt: skip
    parser.add_argument("--nccl", action="store_true",
                        help="tensor parallel: the sums through NCCL, not peer memory, to compare")  # fmt: skip


def main(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench verifier needs a CUDA GPU")
    batches, ks, contexts = ([int(x) for x in text.split(",")] for text in (args.batch, args.k, args.context))
    prompts = [int(x) for x in args.prompts.split(",") if x]
    if args.tensor_parallel_size > 1:
        from edgespec.bench.verifier_parallel import Options, run_parallel

        options = Options(args.repeats, peer_sums=not args.nccl, profile=args.profile,
                          early_launch=not args.no_early_launch)  # fmt: skip
        result = run_parallel(args.arch, args.tensor_parallel_size, (batches, ks, contexts), options)
    else:
        kernels.LAUNCH_EARLY = not args.no_early_launch
        result = run(
            args.arch, batches, ks, contexts, not args.no_eager, args.repeats, not args.unfused, args.profile, prompts
        )
    if args.out:
        with open(args.out, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
