"""What the protocol costs on top of the network: an edgespec verify round trip over loopback
against a raw TCP ping-pong of the same frame sizes, and the bytes of a round."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import torch

from edgespec.cloud.server import CloudServer
from edgespec.cloud.verifier import Verifier
from edgespec.config import CloudConfig, Limits, LinkConfig, ModelConfig, SamplingParams
from edgespec.engine.base import KVSession, Work
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.protocol.codec import encode
from edgespec.protocol.framing import frame
from edgespec.protocol.messages import Draft, SparseDist, TokenizerId, Verdict, Verify
from edgespec.transport.client import CloudLink

VOCAB = 151_936  # the demo pair's vocabulary, so token ids take their real size on the wire


class InstantEngine:
    """An engine that computes nothing (argmax always token 0), so only the protocol is timed."""

    numerics = "none: every token's logits are zero"
    batch_tokens = 1 << 20
    max_sessions = 1 << 20
    max_context = 1 << 20
    device = torch.device("cpu")

    def __init__(self, vocab_size: int = VOCAB) -> None:
        self.vocab_size = vocab_size
        self._logits = torch.zeros(64, vocab_size)

    def new_session(self) -> KVSession:
        return KVSession(cache=None)

    def forward(self, session: KVSession, tokens: list[int], n_logits: int) -> torch.Tensor:
        session.tokens.extend(tokens)
        return self._logits[:n_logits]

    def forward_many(self, works: list[Work]) -> list[torch.Tensor]:
        return [self.forward(work.session, work.tokens, work.n_logits) for work in works]

    def truncate(self, session: KVSession, length: int) -> None:
        del session.tokens[length:]

    def release(self, session: KVSession) -> None:
        session.tokens.clear()

    def close(self) -> None:
        pass


class _FixedTokenizer:
    """Just enough of a tokenizer for the handshake."""

    chat_template = None
    eos_token_ids = ()
    identity = TokenizerId(name="bench", fingerprint="bench")


async def run(rounds: int, k: int) -> None:
    sizes = frame_sizes(k)
    raw = await raw_ping_pong(rounds, sizes["verify greedy"], sizes["verdict"])
    verify, compute = await verify_round_trips(rounds, k)
    print(f"loopback, {rounds} rounds, k = {k}, token ids of a {VOCAB}-entry vocabulary")
    print(f"  raw TCP ping-pong ({sizes['verify greedy']} B up, {sizes['verdict']} B down): median {raw * 1e6:.0f} µs")
    print(f"  edgespec verify round trip (greedy, instant verifier):  median {verify * 1e6:.0f} µs")
    print(f"  of which the cloud's verify step (argmax over {k + 1} x {VOCAB} logits): median {compute * 1e6:.0f} µs")
    print(f"  protocol and scheduling overhead per round: {(verify - compute - raw) * 1e6:.0f} µs")
    print("bytes per round on the wire (frame header included):")
    for name, size in sizes.items():
        print(f"  {name:32} {size:6d} B")


def frame_sizes(k: int, support: int = 64) -> dict[str, int]:
    tokens = [VOCAB - 1 - i for i in range(k)]  # large ids: the worst case for msgpack ints
    dist = SparseDist(ids=[VOCAB - 1 - i for i in range(support)], weights=[65535 - i for i in range(support)])
    greedy = Verify(sid=1, seq=10, start=500, draft=Draft(tokens=tokens))
    sampled = Verify(sid=1, seq=10, start=500, draft=Draft(tokens=tokens, q=[dist] * k))
    verdict = Verdict(sid=1, seq=10, accepted=k, token=VOCAB - 1, verify_us=12345)
    return {
        "verify greedy": len(frame(encode(greedy))),
        f"verify sampling (support {support})": len(frame(encode(sampled))),
        "verdict": len(frame(encode(verdict))),
    }


async def raw_ping_pong(rounds: int, up: int, down: int) -> float:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.readexactly(up):
                writer.write(data[:down])
                await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    payload = bytes(up)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        await reader.readexactly(down)
        samples.append(time.perf_counter() - started)
    writer.close()
    server.close()
    return statistics.median(samples)


async def verify_round_trips(rounds: int, k: int) -> tuple[float, float]:
    """Median round trip and median cloud-reported verify time, in seconds."""
    tokenizer: TokenizerInfo = _FixedTokenizer()  # type: ignore[assignment]
    config = CloudConfig(ModelConfig("instant"), port=0, limits=Limits(max_context=2**30))
    server = CloudServer(Verifier(InstantEngine()), tokenizer, config, "instant")
    host, port = await server.start()
    link = await CloudLink.connect(LinkConfig(host=host, port=port), _FixedTokenizer.identity)
    session = link.session()
    draft = Draft(tokens=[0] * k)  # the instant verifier accepts zeros, so every round is a full accept
    prompt = [1]
    await session.first_round(prompt, SamplingParams(), 1_000_000, draft, None)
    position = len(prompt) + k + 1
    samples, compute = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        verdict = await session.round(position, draft)
        samples.append(time.perf_counter() - started)
        compute.append(verdict.verify_us / 1e6)
        position += k + 1
    session.close()
    await link.close()
    await server.close()
    return statistics.median(samples), statistics.median(compute)
