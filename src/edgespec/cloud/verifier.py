"""The target's side of a session: prefill, verify drafted blocks, decode alone. Synchronous;
runs on the target's worker thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from edgespec.config import SamplingParams
from edgespec.engine.base import Engine, KVSession, Work, extend, missing_tokens
from edgespec.protocol.messages import Draft, TokenLogprobs
from edgespec.sampling.logprobs import token_logprobs
from edgespec.sampling.probs import greedy_rows, greedy_tokens, rows_to_probs
from edgespec.sampling.rng import Stream, uniform
from edgespec.sampling.verify import SampledRound, accept_matching, decide_sampled


@dataclass(eq=False)  # one per session: equal only to itself (and a key by identity)
class TargetSession:
    """What the cloud keeps for one session: its KV and the committed tokens (prompt + output)."""

    kv: KVSession
    committed: list[int]
    sampling: SamplingParams
    seed: int
    logprobs: int | None  # top tokens to report per output token; None reports none


@dataclass(frozen=True)
class RoundResult:
    accepted: int
    token: int
    seconds: float  # time of the forward pass and the decision
    logprobs: list[TokenLogprobs] | None  # one per committed token, when the session asked


class Verifier:
    def __init__(self, engine: Engine, synthetic_acceptance: float | None = None) -> None:
        self.engine = engine
        # benchmarks without real weights (vLLM's synthetic rejection): each drafted token is
        # accepted with this probability whatever the logits say; the output is not the target's
        self.synthetic_acceptance = synthetic_acceptance

    @property
    def numerics(self) -> str:
        if self.synthetic_acceptance is None:
            return self.engine.numerics
        return f"SYNTHETIC ACCEPTANCE {self.synthetic_acceptance:g} (benchmark mode): the output is not the target's"

    def open(self, prompt: list[int], sampling: SamplingParams, logprobs: int | None = None) -> TargetSession:
        seed = sampling.seed if sampling.seed is not None else 0  # edges always send one; greedy needs none
        return TargetSession(self.engine.new_session(), list(prompt), sampling, seed, logprobs)

    def verify(self, session: TargetSession, draft: Draft) -> RoundResult:
        """One speculative round; the first round of a session also prefills its prompt."""
        started = time.perf_counter()
        k = len(draft.tokens)
        logits = extend(self.engine, session.kv, session.committed, list(draft.tokens), k + 1)  # [k+1, vocab]
        return self._conclude(session, draft, logits, started)

    def verify_many(
        self, rounds: list[tuple[TargetSession, Draft]], queued: threading.Event | None = None
    ) -> list[RoundResult]:
        """Several sessions' rounds in one forward call (the engine batches them where it can);
        `queued` is set once a GPU has the call (before its results are read). Each round reports
        the time from the call's start to its own decision: that is what its edge waited for."""
        started = time.perf_counter()
        works = [Work(s.kv, self._round_tokens(s, d), len(d.tokens) + 1) for s, d in rounds]
        all_logits = self.engine.forward_many(works)
        if queued is not None:
            queued.set()
        choices = greedy_rows(all_logits)  # every session's greedy choices in one copy to the host
        sampled = [i for i, (session, _) in enumerate(rounds) if self._samples(session)]
        decided = dict(zip(sampled, self._sampled([(*rounds[i], all_logits[i]) for i in sampled]), strict=True))
        return [
            self._conclude(s, d, logits, started, picks, decided.get(i))
            for i, ((s, d), logits, picks) in enumerate(zip(rounds, all_logits, choices, strict=True))
        ]

    def _round_tokens(self, session: TargetSession, draft: Draft) -> list[int]:
        """What a round's forward runs. Usually the cache holds every committed token but the last
        (_conclude keeps it so), which spares comparing the whole context each round."""
        if len(session.kv.tokens) == len(session.committed) - 1:
            return [session.committed[-1], *draft.tokens]
        return missing_tokens(self.engine, session.kv, session.committed, list(draft.tokens))

    def new_tokens(self, session: TargetSession, draft: Draft) -> int:
        """How many positions a round would compute (the first one prefills the prompt too)."""
        return len(session.committed) - min(len(session.kv.tokens), len(session.committed) - 1) + len(draft.tokens)

    def _conclude(
        self,
        session: TargetSession,
        draft: Draft,
        logits: torch.Tensor,
        started: float,  # time.perf_counter() when the round's forward call began
        choices: list[int] | None = None,
        decision: tuple[int, int] | None = None,
    ) -> RoundResult:
        """Decide from the round's logits [k+1, vocab] (and their argmaxes, when already read),
        unless decided already with its batch (a sampled session), commit, and drop the rejected
        tail's KV."""
        accepted, token = decision if decision is not None else self._decide(session, draft, logits, choices)
        produced = [*draft.tokens[:accepted], token]
        session.committed += produced
        self.engine.truncate(session.kv, len(session.committed) - 1)
        logprobs = _report(session, logits, produced)
        return RoundResult(accepted, token, time.perf_counter() - started, logprobs)

    def release(self, session: TargetSession) -> None:
        self.engine.release(session.kv)

    def _samples(self, session: TargetSession) -> bool:
        """Whether the session's rounds are decided by rejection sampling (not greedy, not synthetic)."""
        return self.synthetic_acceptance is None and not session.sampling.greedy

    def _decide(
        self, session: TargetSession, draft: Draft, logits: torch.Tensor, choices: list[int] | None
    ) -> tuple[int, int]:  # logits [k+1, vocab]; choices: their argmaxes if already read
        if self._samples(session):
            return self._sampled([(session, draft, logits)])[0]
        choices = choices if choices is not None else greedy_tokens(logits)  # read only when needed
        if self.synthetic_acceptance is not None:
            return self._synthetic(session, draft, choices)
        return accept_matching(choices, draft.tokens)

    def _sampled(self, rounds: list[tuple[TargetSession, Draft, torch.Tensor]]) -> list[tuple[int, int]]:
        """Rejection sampling of sampled sessions' rounds, all at once (sampling/verify.py)."""
        decisions, rows, params = [], [], []
        for session, draft, logits in rounds:
            assert draft.q is not None  # the session table refuses sampled drafts without q
            start, k = len(session.committed), len(draft.tokens)
            accept_u = [uniform(session.seed, Stream.ACCEPT, start + i) for i in range(k)]
            sample_u = [uniform(session.seed, Stream.TARGET, start + i) for i in range(k + 1)]
            decisions.append(SampledRound(draft.tokens, draft.q, accept_u, sample_u))
            rows.append(logits)
            params += [session.sampling] * (k + 1)
        return decide_sampled(rows_to_probs(torch.cat(rows), params), decisions) if rounds else []

    def _synthetic(self, session: TargetSession, draft: Draft, choices: list[int]) -> tuple[int, int]:
        """Accept each drafted token with the set probability (drawn by position, as real rounds
        draw), then the target's greedy token where the run stopped."""
        assert self.synthetic_acceptance is not None
        start, accepted = len(session.committed), 0
        while (
            accepted < len(draft.tokens)
            and uniform(session.seed, Stream.ACCEPT, start + accepted) < self.synthetic_acceptance
        ):
            accepted += 1
        return accepted, choices[accepted]


def _report(session: TargetSession, logits: torch.Tensor, produced: list[int]) -> list[TokenLogprobs] | None:
    """The logprobs of the produced tokens, if the session asked for them."""
    if session.logprobs is None:
        return None
    return token_logprobs(logits, produced, session.logprobs)
