"""Co-located speculation, the fourth baseline: the cloud holds the draft model too and speculates
on its own, as a user of vLLM's built-in speculative decoding gets; the edge only relays tokens."""

from __future__ import annotations

from edgespec.cloud.verifier import RoundResult, TargetSession, Verifier
from edgespec.edge.drafter import Drafter
from edgespec.engine.base import Engine, KVSession
from edgespec.engine.worker import ModelWorker


class LocalDraft:
    """The cloud's own draft model, on its own worker thread."""

    def __init__(self, engine: Engine, support: int) -> None:
        self.engine = engine
        self.drafter = Drafter(engine, support)
        self.worker = ModelWorker("cloud-draft")

    def new_session(self) -> KVSession:
        return self.engine.new_session()

    def release(self, kv: KVSession) -> None:
        self.worker.submit(self.engine.release, kv)

    async def round(
        self, verifier: Verifier, target_worker: ModelWorker, target: TargetSession, kv: KVSession, k: int
    ) -> tuple[list[int], RoundResult]:
        """Draft k tokens here, verify them here; the committed tokens and the round's result."""
        assert target.seed is not None
        draft = await self.worker.run(self.drafter.propose, kv, target.committed, k, target.sampling, target.seed)
        result = await target_worker.run(verifier.verify, target, draft)
        return [*draft.tokens[: result.accepted], result.token], result

    def shutdown(self) -> None:
        self.worker.shutdown(last=self.engine.close)
