"""From an API request to a response: prompt ids and limits, the generation itself, stop strings,
and the whole response or its event stream. Routes stay thin; this is where requests are served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgespec.api.errors import ApiError, bad_request, error_event, unavailable
from edgespec.api.responses import Api, LogprobsFormatter, Piece, ResponseHeader, usage
from edgespec.api.schemas import ChatCompletionRequest, CompletionRequest, GenerationFields, StreamOptions
from edgespec.api.sse import DONE, EventStream, event
from edgespec.api.text import TextStream
from edgespec.config import SamplingParams
from edgespec.edge.request import Generation, GenerationRequest
from edgespec.edge.runtime import CloudUnavailable, EdgeRuntime
from edgespec.metrics.prometheus import EdgeMetrics
from edgespec.protocol.messages import ErrorCode
from edgespec.transport.client import CloudError, LinkError

T = TypeVar("T")
_CLIENT_ERRORS = {ErrorCode.CONTEXT_TOO_LONG, ErrorCode.INVALID_REQUEST}


@dataclass(frozen=True)
class Prepared:
    """A validated request, ready to run."""

    api: Api
    body: GenerationFields
    generation: GenerationRequest
    logprobs: bool


class ClientGone(Exception):
    """The client disconnected before its response was ready."""


class CompletionService:
    def __init__(self, runtime: EdgeRuntime, metrics: EdgeMetrics, model_name: str) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.model_name = model_name

    def prepare_completion(self, body: CompletionRequest) -> Prepared:
        given = body.single_prompt
        prompt = self.runtime.tokenizer.encode(given) if isinstance(given, str) else given
        self._check_ids(prompt)
        return self._prepare(Api.COMPLETIONS, body, prompt, body.max_tokens, body.logprobs)

    def prepare_chat(self, body: ChatCompletionRequest) -> Prepared:
        messages = [{"role": message.role, "content": message.text} for message in body.messages]
        try:
            prompt = self.runtime.render_chat(messages)
        except Exception as exc:  # a template may reject a conversation (e.g. roles out of order)
            raise bad_request(f"the chat template rejected the messages: {exc}", "messages") from None
        return self._prepare(Api.CHAT, body, prompt, body.max_new_tokens, body.logprobs_count)

    async def respond(self, prepared: Prepared, http: Request) -> Response:
        generation = self._start(prepared)
        pieces = self._pieces(generation, prepared)
        header = ResponseHeader(prepared.api, self.model_name, prepared.body.return_token_ids)
        formatter = LogprobsFormatter(prepared.api, self.runtime.tokenizer) if prepared.logprobs else None
        if prepared.body.stream:
            first = await _unless_disconnected(_first_or_error(pieces), http)  # errors here keep their status
            return EventStream(self._events(header, formatter, generation, first, pieces, prepared))
        collected = await _unless_disconnected(_gather(pieces), http)
        return JSONResponse(header.whole(_merge(collected), self._usage(generation, collected), formatter))

    # --- preparing

    def _prepare(
        self, api: Api, body: GenerationFields, prompt: list[int], max_tokens: int | None, logprobs: int | None
    ) -> Prepared:
        if body.model is not None and body.model != self.model_name:
            raise bad_request(f"unknown model {body.model!r}; this server serves {self.model_name!r}", "model")
        if not prompt:
            raise bad_request("the prompt is empty", "prompt")
        room = self.runtime.max_context - len(prompt)
        if room < 1 or (max_tokens is not None and max_tokens > room):
            raise bad_request(
                f"the prompt has {len(prompt)} tokens and asks for {max_tokens or 1} more, over this model's "
                f"context of {self.runtime.max_context} tokens",
                "prompt" if room < 1 else "max_tokens",
            )
        self._check_ids(body.stop_token_ids)
        sampling = SamplingParams(
            temperature=body.temperature, top_p=body.top_p, top_k=body.effective_top_k, seed=body.seed
        )
        request = GenerationRequest(
            prompt=prompt,
            max_tokens=max_tokens or room,
            sampling=sampling,
            mode=body.mode,
            num_speculative_tokens=body.num_speculative_tokens,
            ignore_eos=body.ignore_eos,
            stop_token_ids=tuple(body.stop_token_ids),
            logprobs=logprobs,
        )
        return Prepared(api, body, request, logprobs is not None)

    def _check_ids(self, ids: list[int]) -> None:
        vocab = self.runtime.engine.vocab_size
        if ids and max(ids) >= vocab:
            raise bad_request(f"token id {max(ids)} is outside the vocabulary of {vocab}")

    def _start(self, prepared: Prepared) -> Generation:
        try:
            generation = self.runtime.generate(prepared.generation)
        except LinkError as exc:  # a cloud mode on an edge started without a cloud
            raise bad_request(str(exc), "mode") from None
        self.metrics.request_started(generation.mode.value, len(prepared.generation.prompt))
        return generation

    # --- running

    async def _pieces(self, generation: Generation, prepared: Prepared) -> AsyncGenerator[Piece, None]:
        """The response in pieces, one per committed chunk; applies stop strings; always ends the generation."""
        text = TextStream(self.runtime.tokenizer, prepared.body.stop_strings)
        used = 0
        self.metrics.running.inc()
        try:
            async for chunk in generation:
                delta = text.push(chunk.tokens)
                keep, used = text.tokens_used - used, text.tokens_used
                piece = Piece(delta, chunk.tokens[:keep], chunk.logprobs[:keep] if chunk.logprobs else None)
                if text.stopped:
                    piece.finish_reason = "stop"
                elif generation.finish_reason is not None:
                    piece.text += text.finish()
                    piece.finish_reason = generation.finish_reason.value
                yield piece
                if piece.finish_reason is not None:
                    return
            # the generation ended on a token that is not output (an end-of-sequence)
            reason = generation.finish_reason.value if generation.finish_reason else "stop"
            yield Piece(text.finish(), finish_reason=reason)
        finally:
            self.metrics.running.dec()
            await generation.aclose()

    async def _events(
        self,
        header: ResponseHeader,
        formatter: LogprobsFormatter | None,
        generation: Generation,
        first: Piece,
        rest: AsyncGenerator[Piece, None],
        prepared: Prepared,
    ) -> AsyncGenerator[str, None]:
        options = prepared.body.stream_options or StreamOptions()
        collected: list[Piece] = []
        try:
            async for piece in _chain(first, rest):
                collected.append(piece)
                payload = header.chunk(piece, formatter, first=len(collected) == 1)
                if options.continuous_usage_stats:
                    payload["usage"] = self._usage(generation, collected)
                yield event(payload)
            if options.include_usage:
                yield event(header.usage_chunk(self._usage(generation, collected)))
        except Exception as exc:  # after the headers went out, an error can only travel in the stream
            error = api_error(exc)
            if error is None:
                raise
            yield error_event(error)
        finally:
            await rest.aclose()
        yield DONE

    def _usage(self, generation: Generation, pieces: list[Piece]) -> dict[str, object]:
        completion_tokens = sum(len(piece.token_ids) for piece in pieces)
        return usage(len(generation.request.prompt), completion_tokens, generation.stats)


def api_error(exc: Exception) -> ApiError | None:
    """The HTTP error a failure during generation maps to; None for a bug (re-raised)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, CloudUnavailable):
        return unavailable(str(exc))
    if isinstance(exc, CloudError):
        if exc.code in _CLIENT_ERRORS:
            return bad_request(str(exc))
        if exc.code is ErrorCode.TOO_MANY_SESSIONS:
            return unavailable(str(exc))
        return ApiError(502, str(exc), "cloud_error")
    if isinstance(exc, ValueError):
        return bad_request(str(exc))
    return None


async def _chain(first: Piece, rest: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    yield first
    async for piece in rest:
        yield piece


async def _first_or_error(pieces: AsyncGenerator[Piece, None]) -> Piece:
    try:
        return await anext(pieces)
    except Exception as exc:
        await pieces.aclose()
        error = api_error(exc)
        if error is None:
            raise
        raise error from None


async def _gather(pieces: AsyncIterator[Piece]) -> list[Piece]:
    try:
        return [piece async for piece in pieces]
    except Exception as exc:
        error = api_error(exc)
        if error is None:
            raise
        raise error from None


async def _unless_disconnected(work: Coroutine[Any, Any, T], http: Request) -> T:
    """Run `work`, cancelling it (and so freeing the cloud session) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(http))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(gone, return_exceptions=True)
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    raise ClientGone()


async def _disconnected(http: Request) -> None:
    while (await http.receive())["type"] != "http.disconnect":
        pass


def _merge(pieces: list[Piece]) -> Piece:
    merged = Piece(finish_reason=pieces[-1].finish_reason if pieces else None)
    logprobs = []
    for piece in pieces:
        merged.text += piece.text
        merged.token_ids += piece.token_ids
        logprobs += piece.logprobs or []
    merged.logprobs = logprobs or None
    return merged
