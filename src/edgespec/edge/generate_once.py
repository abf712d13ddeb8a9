"""`edgespec generate`: one request from the command line, streamed to stdout."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from edgespec.config import EdgePolicy, LinkConfig, ModelConfig, SamplingParams
from edgespec.edge.launch import start_edge
from edgespec.edge.request import Generation, GenerationRequest
from edgespec.engine.tokenizer import TokenizerInfo


@dataclass(frozen=True)
class GenerateOptions:
    model: ModelConfig
    link: list[LinkConfig] | None
    policy: EdgePolicy
    prompt: str
    chat: bool
    max_tokens: int
    ignore_eos: bool
    sampling: SamplingParams
    print_stats: bool


async def generate_once(options: GenerateOptions) -> None:
    runtime = await start_edge(options.model, options.link, options.policy)
    try:
        prompt = (
            runtime.render_chat([{"role": "user", "content": options.prompt}])
            if options.chat
            else runtime.tokenizer.encode(options.prompt)
        )
        request = GenerationRequest(prompt, options.max_tokens, options.sampling, ignore_eos=options.ignore_eos)
        generation = runtime.generate(request)
        await print_as_generated(generation, runtime.tokenizer)
        if options.print_stats:
            print(
                json.dumps(
                    generation.stats.as_dict()
                    | {"finish_reason": generation.finish_reason.value if generation.finish_reason else None}
                )
            )
    finally:
        await runtime.aclose()


async def print_as_generated(generation: Generation, tokenizer: TokenizerInfo) -> None:
    """Stream a generation's text to stdout as its tokens are committed."""
    shown = ""
    async for _ in generation:
        text = tokenizer.decode(generation.tokens)  # whole text: a token may complete a character
        sys.stdout.write(text[len(shown) :])
        sys.stdout.flush()
        shown = text
    print()
