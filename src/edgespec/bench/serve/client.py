"""One streamed request and its timings. Inter-token latency is per token: a chunk that carries n
tokens after a gap g counts n gaps of g/n (tokens in the first chunk after the first arrive with
it: gap 0). The count of tokens per chunk comes from `continuous_usage_stats`, which vLLM and
edgespec send; a server without it is taken to send one token per non-empty chunk."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from edgespec.bench.serve.dataset import SampleRequest


@dataclass
class RequestOutput:
    success: bool = False
    prompt_len: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    generated_text: str = ""
    error: str = ""


@dataclass(frozen=True)
class RequestShape:
    """What every request of a run shares."""

    url: str
    chat: bool
    model: str
    temperature: float
    top_p: float
    ignore_eos: bool
    api_key: str | None

    def payload(self, sample: SampleRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": sample.output_len,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.chat:
            return body | {"messages": [{"role": "user", "content": sample.prompt}]}
        return body | {"prompt": sample.prompt}


async def send(client: httpx.AsyncClient, shape: RequestShape, sample: SampleRequest) -> RequestOutput:
    output = RequestOutput(prompt_len=sample.prompt_len)
    headers = {"Authorization": f"Bearer {shape.api_key}"} if shape.api_key else {}
    started = time.perf_counter()
    try:
        async with client.stream("POST", shape.url, json=shape.payload(sample), headers=headers) as response:
            if response.status_code != 200:
                output.error = f"HTTP {response.status_code}: {(await response.aread()).decode(errors='replace')[:500]}"
                return output
            await _read_events(response, shape.chat, output, started)
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, TypeError) as exc:
        output.error = f"{type(exc).__name__}: {exc}"
        return output
    output.latency = time.perf_counter() - started
    output.success = not output.error
    return output


async def _read_events(response: httpx.Response, chat: bool, output: RequestOutput, started: float) -> None:
    last = started
    counted = 0  # tokens accounted for so far
    async for line in response.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        now = time.perf_counter()
        data = json.loads(line.removeprefix("data: "))
        if "error" in data:
            output.error = str(data["error"].get("message", data["error"]))
            return
        usage = data.get("usage") or {}
        text = _text(data, chat)
        if text or (data.get("choices") and usage.get("completion_tokens", counted) > counted):
            tokens = usage.get("completion_tokens", counted + 1) - counted
            _record(output, tokens, now, last, started, first=counted == 0)
            counted += tokens
            last = now
            output.generated_text += text
        if usage.get("completion_tokens") is not None:
            output.output_tokens = usage["completion_tokens"]
    output.output_tokens = output.output_tokens or counted


def _text(data: dict[str, Any], chat: bool) -> str:
    choices = data.get("choices") or []
    if not choices:
        return ""
    return (choices[0].get("delta", {}).get("content") if chat else choices[0].get("text")) or ""


def _record(output: RequestOutput, tokens: int, now: float, last: float, started: float, first: bool) -> None:
    if tokens <= 0:
        return
    if first:
        output.ttft = now - started
        output.itl += [0.0] * (tokens - 1)  # they arrived with the first token
    else:
        output.itl += [(now - last) / tokens] * tokens
