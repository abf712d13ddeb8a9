"""Per-request statistics, with vLLM's definitions of the speculative counters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SpecStats:
    """What one request did. Rates follow vLLM: acceptance rate = accepted / drafted tokens;
    mean acceptance length = 1 + accepted / rounds (the cloud's own token counts as one)."""

    mode: str
    output_tokens: int = 0
    rounds: int = 0  # speculative rounds = draft blocks verified
    draft_tokens: int = 0
    accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    target_forwards: int = 0  # forward passes the cloud ran for this request
    bytes_up: int = 0
    bytes_down: int = 0
    draft_s: float = 0.0  # edge time drafting
    network_s: float = 0.0  # time from sending a request to its reply, cloud work included
    verify_s: float = 0.0  # cloud time in forward passes, as the cloud reports it
    ttft_s: float = 0.0
    wall_s: float = 0.0
    fallback_tokens: int = 0  # produced by the draft alone while the cloud was away: not the target's
    link_losses: int = 0  # times this request lost its cloud session and re-opened it
    burst_tokens: int = 0  # decoded by the cloud alone in spec mode's bursts (a slow link)
    lookahead_hits: int = 0  # rounds whose next block had been drafted ahead and held
    lookahead_misses: int = 0  # rounds whose drafted-ahead block was dropped

    def record_round(self, drafted: int, accepted: int, network_s: float, verify_s: float) -> None:
        self.rounds += 1
        self.target_forwards += 1
        self.draft_tokens += drafted
        self.accepted_tokens += accepted
        self.network_s += network_s
        self.verify_s += verify_s
        if len(self.accepted_per_position) < drafted:
            self.accepted_per_position += [0] * (drafted - len(self.accepted_per_position))
        for position in range(accepted):
            self.accepted_per_position[position] += 1

    def record_burst(self, tokens: int) -> None:
        self.burst_tokens += tokens
        self.target_forwards += tokens

    def record_lookahead(self, confirmed: bool) -> None:
        if confirmed:
            self.lookahead_hits += 1
        else:
            self.lookahead_misses += 1

    def add(self, other: SpecStats) -> None:
        """Accumulate another request's statistics (for totals over several requests)."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        longer = max(len(self.accepted_per_position), len(other.accepted_per_position))
        self.accepted_per_position = [
            _at(self.accepted_per_position, i) + _at(other.accepted_per_position, i) for i in range(longer)
        ]

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else None

    @property
    def mean_acceptance_length(self) -> float | None:
        return 1 + self.accepted_tokens / self.rounds if self.rounds else None

    @property
    def tokens_per_second(self) -> float | None:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else None

    @property
    def target_forwards_per_token(self) -> float | None:
        return self.target_forwards / self.output_tokens if self.output_tokens else None

    @property
    def network_wait_s(self) -> float:
        """Time spent waiting on the link itself, the cloud's compute taken out."""
        return max(self.network_s - self.verify_s, 0.0)

    def as_dict(self) -> dict[str, object]:
        derived = {
            "acceptance_rate": self.acceptance_rate,
            "mean_acceptance_length": self.mean_acceptance_length,
            "tokens_per_second": self.tokens_per_second,
            "target_forwards_per_token": self.target_forwards_per_token,
            "network_wait_s": self.network_wait_s,
        }
        return asdict(self) | derived


_SUMMED = (
    "output_tokens",
    "rounds",
    "draft_tokens",
    "accepted_tokens",
    "target_forwards",
    "bytes_up",
    "bytes_down",
    "draft_s",
    "network_s",
    "verify_s",
    "ttft_s",
    "wall_s",
    "fallback_tokens",
    "link_losses",
    "burst_tokens",
    "lookahead_hits",
    "lookahead_misses",
)


def _at(values: list[int], index: int) -> int:
    return values[index] if index < len(values) else 0
