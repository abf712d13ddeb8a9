"""`edgespec bench capacity`: the capacity argument for edge drafting, measured. One cloud (the
static engine, synthetic acceptance α) serves N simulated edges in this process, each over its own
TCP connection on loopback with the real wire protocol. First every edge speculates (k random
tokens a round, so drafting costs the cloud nothing), then every edge asks for cloud-mode decoding
of the same sessions; both are batched across sessions by the cloud. Sessions have a fixed prompt
and a fixed budget of new tokens, and re-open when it is spent. The figures: output tokens per
second of the cloud (per GPU-second: the GPU serves nothing else) and per session."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass

import torch

from edgespec.bench.verifier import ARCHITECTURES, random_model
from edgespec.cloud.server import CloudServer
from edgespec.cloud.verifier import Verifier
from edgespec.config import CloudConfig, LinkConfig, ModelConfig, SamplingParams
from edgespec.engine.static_engine import StaticEngine
from edgespec.engine.tiny import TINY_VOCAB, build_tokenizer
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.protocol.messages import Draft
from edgespec.transport.client import CloudLink


@dataclass(frozen=True)
class Phase:
    mode: str
    tokens: int
    seconds: float
    per_session_tokens_per_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


async def speculating_edge(link: CloudLink, prompt: list[int], budget: int, k: int, deadline: float) -> int:
    produced = 0
    while time.monotonic() < deadline:
        session, made = link.session(), 0
        verdict = await session.first_round(prompt, SamplingParams(), budget, _draft(k), None)
        made += verdict.accepted + 1
        while made + k + 1 <= budget and time.monotonic() < deadline:
            verdict = await session.round(len(prompt) + made, _draft(k))
            made += verdict.accepted + 1
        session.close()
        produced += made
    return produced


async def decoding_edge(link: CloudLink, prompt: list[int], budget: int, deadline: float) -> int:
    produced = 0
    while time.monotonic() < deadline:
        session = link.session()
        async for message in session.stream(prompt, SamplingParams(), budget, True, None, None):
            produced += len(message.tokens)
            if time.monotonic() >= deadline:
                break
        session.close()
    return produced


def _draft(k: int) -> Draft:
    return Draft(tokens=[random.randrange(1000, 2000) for _ in range(k)])


async def phase(links: list[CloudLink], mode: str, prompt: list[int], budget: int, k: int, seconds: float) -> Phase:
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    if mode == "spec":
        counts = await asyncio.gather(*(speculating_edge(link, prompt, budget, k, deadline) for link in links))
    else:
        counts = await asyncio.gather(*(decoding_edge(link, prompt, budget, deadline) for link in links))
    elapsed = time.monotonic() - started
    return Phase(mode, sum(counts), elapsed, sum(counts) / elapsed / len(links))


@dataclass(frozen=True)
class Plan:
    sessions: int
    alpha: float
    k: int
    context: int
    budget: int
    seconds: float
    warm_up_s: float = 5.0  # per mode, first: captures the graphs that mode needs


async def measure(engine: StaticEngine, plan: Plan) -> list[Phase]:
    tokenizer = TokenizerInfo(build_tokenizer(TINY_VOCAB), "capacity-bench", eos_token_ids=())
    config = CloudConfig(ModelConfig("random weights"), port=0, synthetic_acceptance=plan.alpha)
    server = CloudServer(Verifier(engine, plan.alpha), tokenizer, config, "random weights")
    _, port = await server.start()
    links = [await CloudLink.connect(LinkConfig(port=port), tokenizer.identity) for _ in range(plan.sessions)]
    prompt = [random.randrange(1000, 2000) for _ in range(plan.context)]
    try:
        results = []
        for mode in ("spec", "cloud"):
            await phase(links, mode, prompt, plan.budget, plan.k, plan.warm_up_s)
            results.append(await phase(links, mode, prompt, plan.budget, plan.k, plan.seconds))
            print(_line(results[-1]), flush=True)
        return results
    finally:
        for link in links:
            await link.close()
        await server.close()


def _line(result: Phase) -> str:
    rates = f"{result.tokens_per_s:8.0f} output tok/s of the cloud  {result.per_session_tokens_per_s:7.1f} per session"
    return f"{result.mode:5s}  {rates}  ({result.tokens} tokens in {result.seconds:.1f} s)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="qwen3-8b", choices=sorted(ARCHITECTURES))
    parser.add_argument("--random-weights", action="store_true", help="the only kind there is on the GPU machine")
    parser.add_argument("--sessions", type=int, default=32, help="simulated edges, one session each")
    parser.add_argument("--alpha", type=float, default=0.8, help="synthetic acceptance per drafted token")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--context", type=int, default=512, help="prompt tokens per session")
    parser.add_argument("--budget", type=int, default=256, help="new tokens per session before it re-opens")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per mode")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds per mode before measuring")
    parser.add_argument("--out", help="write the figures as JSON here")


def main(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = random_model(args.arch, device)
    # twice the slots: a session that re-opens may do so before the cloud has let its last one go
    engine = StaticEngine(model, 2 * args.sessions, args.context + args.budget + 1, kv_budget=1 << 40)
    plan = Plan(args.sessions, args.alpha, args.k, args.context, args.budget, args.duration, args.warmup)
    results = asyncio.run(measure(engine, plan))
    spec, cloud = results
    print(f"speculation serves {spec.tokens_per_s / cloud.tokens_per_s:.2f}x the output tokens per GPU-second "
          f"of batched cloud decoding ({args.sessions} sessions, α = {args.alpha}, k = {args.k})")  # fmt: skip
    if args.out:
        phases = [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in results]
        with open(args.out, "w") as file:
            json.dump(
                {"plan": asdict(plan), "arch": args.arch, "device": str(device), "phases": phases}, file, indent=2
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
