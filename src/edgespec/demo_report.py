"""What the demo prints after its runs: a table of measured figures per mode, the figures that
explain them (acceptance, the cloud's forward passes per token, the measured cost of a verify
pass against one decode step), and a projection for a GPU cloud from the analytical model."""

from __future__ import annotations

from dataclasses import dataclass

from edgespec.bench.model import alpha_from_mean_length, expected_tokens_per_round
from edgespec.config import Mode

# The GPU the projection assumes, measured with edgespec's static engine (docs/gpu-verifier.md: one
# H100, Qwen3-8B shape, bf16, batch 1, context 512): one decode step, and a 5-token verify against it.
GPU_STEP_S = 0.00615
GPU_VERIFY_RATIO = 1.04  # 6.41 ms
PROJECTED_RTT_S = 0.020  # a metro-area link


@dataclass(frozen=True)
class ModeResult:
    mode: Mode
    seconds: float
    first_token_s: float
    usage: dict[str, object]

    @property
    def tokens(self) -> int:
        tokens = self.usage.get("completion_tokens", 0)
        assert isinstance(tokens, int)
        return tokens

    @property
    def speculation(self) -> dict[str, float]:
        spec = self.usage.get("speculation") or {}
        assert isinstance(spec, dict)
        return {key: value for key, value in spec.items() if isinstance(value, int | float)}

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def print_report(results: list[ModeResult], k: int, engine: str, cloud_cores: str, edge_cores: str) -> None:
    by_mode = {result.mode: result for result in results}
    print(f"\nk = {k}, engine {engine}, cloud on cores {cloud_cores}, edge on cores {edge_cores}; through the")
    print("edge's HTTP API on loopback, wall time per request (measured)")
    _print_table(results)
    spec, cloud, edge = by_mode[Mode.SPEC], by_mode[Mode.CLOUD], by_mode[Mode.EDGE]
    ratio = _verify_cost_ratio(spec, cloud)
    mean_length = spec.speculation.get("mean_acceptance_length")
    if mean_length and ratio:
        forwards_per_token = spec.speculation.get("cloud_forward_passes", 0) / max(spec.tokens, 1)
        print(f"\nmeasured: a verify pass over k+1 = {k + 1} tokens costs {ratio:.2f}x one decode step here;")
        print(f"each pass commits {mean_length:.2f} tokens: {forwards_per_token:.2f} target forwards per token.")
        _print_projection(k, mean_length, edge.tokens_per_s)


def _print_table(results: list[ModeResult]) -> None:
    header = ("mode", "tokens", "tok/s", "first token s", "accept rate", "mean acc len", "tokens/target fwd")
    rows = [header] + [_row(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))


def _row(result: ModeResult) -> tuple[str, ...]:
    spec = result.speculation
    forwards = spec.get("cloud_forward_passes", 0)
    return (
        result.mode.value,
        str(result.tokens),
        f"{result.tokens_per_s:.2f}",
        f"{result.first_token_s:.2f}",
        _fmt(spec.get("acceptance_rate")),
        _fmt(spec.get("mean_acceptance_length")),
        _fmt(result.tokens / forwards if forwards else None),
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _verify_cost_ratio(spec: ModeResult, cloud: ModeResult) -> float | None:
    """The cloud's time per verify pass (as it reports it) over its time per token in cloud mode."""
    passes = spec.speculation.get("cloud_forward_passes", 0)
    verify_s = spec.speculation.get("verify_time_s", 0.0)
    if not passes or not cloud.tokens:
        return None
    return (verify_s / passes) / (cloud.seconds / cloud.tokens)


def _print_projection(k: int, mean_length: float, draft_tokens_per_s: float) -> None:
    alpha = alpha_from_mean_length(mean_length, k)
    per_round = expected_tokens_per_round(alpha, k)
    capacity = per_round / GPU_VERIFY_RATIO
    draft_s = k / draft_tokens_per_s if draft_tokens_per_s else 0.0
    spec_rate = per_round / (draft_s + PROJECTED_RTT_S + GPU_VERIFY_RATIO * GPU_STEP_S)
    print("\nPROJECTION (analytical model, not measured here): a GPU cloud whose decode step takes")
    print(f"{GPU_STEP_S * 1000:.1f} ms and whose {k + 1}-token verify costs {GPU_VERIFY_RATIO:.2f} steps "
          "(H100, Qwen3-8B shape: docs/gpu-verifier.md),")  # fmt: skip
    print(f"with this draft (α = {alpha:.2f}, {draft_tokens_per_s:.1f} tok/s on the edge) over a "
          f"{PROJECTED_RTT_S * 1000:.0f} ms link:")  # fmt: skip
    print(f"  GPU time per output token: {1 / capacity:.2f} of cloud decoding's, so one GPU serves "
          f"{capacity:.1f}x the streams")  # fmt: skip
    print(f"  per stream: spec ≈ {spec_rate:.0f} tok/s against cloud decoding's {1 / GPU_STEP_S:.0f} tok/s "
          "(an edge CPU draft trades per-stream speed for cloud capacity)")  # fmt: skip
