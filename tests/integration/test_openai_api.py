"""The edge's HTTP API through the official `openai` client, against a real edge process and a
real cloud process on loopback: text, usage, finish_reason and logprobs as OpenAI documents them,
greedy output equal to the target alone, reproducible seeded sampling, stops, modes, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import Iterator

import httpx
import openai
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tests.conftest import TinyPair
from tests.integration.api_fixtures import (
    Cloud,
    cloud_with_metrics,
    edge_url,
    eventually,
    metric_samples,
    metric_value,
)
from tests.reference import reference_greedy, reference_logprobs

PROMPT = "def quicksort(arr):"
GREEDY = {"temperature": 0.0}
NO_EOS = {"ignore_eos": True, "return_token_ids": True}


@pytest.fixture(scope="module")
def cloud(tiny_pair: TinyPair) -> Iterator[Cloud]:
    with cloud_with_metrics(tiny_pair.target, "--draft-model", str(tiny_pair.draft)) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(tiny_pair: TinyPair, cloud: Cloud) -> Iterator[str]:
    with edge_url(tiny_pair.draft, cloud.port) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(tiny_pair: TinyPair) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_pair.target)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str = PROMPT) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_completion_equals_the_target_alone(client: openai.OpenAI, tiny_pair: TinyPair, tokenizer) -> None:
    response = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, extra_body=GREEDY | NO_EOS)
    choice = response.choices[0]
    expected = reference_greedy(tiny_pair.target, prompt_ids(tokenizer), 30)
    assert choice.model_extra["token_ids"] == expected
    assert choice.text == tokenizer.decode(expected, skip_special_tokens=True)
    assert choice.finish_reason == "length"
    assert response.object == "text_completion" and response.model == "tiny"
    usage = response.usage
    assert usage.prompt_tokens == len(prompt_ids(tokenizer)) and usage.completion_tokens == 30
    assert usage.total_tokens == usage.prompt_tokens + 30
    speculation = usage.model_extra["speculation"]
    assert speculation["mode"] == "spec" and speculation["num_drafts"] >= 30 / 5
    assert 1 <= speculation["mean_acceptance_length"] <= 5 and usage.model_extra["fallback_tokens"] == 0


@pytest.mark.parametrize("mode", ["spec", "cloud", "edge", "colocated"])
def test_each_mode_gives_its_models_greedy_output(
    client: openai.OpenAI, tiny_pair: TinyPair, tokenizer, mode: str
) -> None:
    response = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=24, extra_body=GREEDY | NO_EOS | {"mode": mode}
    )
    model = tiny_pair.draft if mode == "edge" else tiny_pair.target
    assert response.choices[0].model_extra["token_ids"] == reference_greedy(model, prompt_ids(tokenizer), 24)
    assert response.usage.model_extra["speculation"]["mode"] == mode


@pytest.mark.parametrize("k", [1, 7])
def test_per_request_draft_length(client: openai.OpenAI, tiny_pair: TinyPair, tokenizer, k: int) -> None:
    body = GREEDY | NO_EOS | {"num_speculative_tokens": k}
    response = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, extra_body=body)
    assert response.choices[0].model_extra["token_ids"] == reference_greedy(tiny_pair.target, prompt_ids(tokenizer), 20)
    speculation = response.usage.model_extra["speculation"]
    assert speculation["num_draft_tokens"] <= k * speculation["num_drafts"]
    assert len(speculation["num_accepted_tokens_per_pos"]) <= k


def test_auto_draft_length_keeps_the_output_and_shows_its_decisions(
    client: openai.OpenAI, base_url: str, tiny_pair: TinyPair, tokenizer
) -> None:
    edge_metrics = base_url.removesuffix("/v1") + "/metrics"
    body = GREEDY | NO_EOS | {"num_speculative_tokens": "auto"}
    response = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, extra_body=body)
    assert response.choices[0].model_extra["token_ids"] == reference_greedy(tiny_pair.target, prompt_ids(tokenizer), 20)
    samples = metric_samples(edge_metrics)
    decisions = [value for (name, _), value in samples.items() if name == "edgespec:spec_controller_decisions_total"]
    assert sum(decisions) >= 1
    assert samples[("edgespec:spec_controller_estimate_seconds", (("quantity", "round_trip"),))] >= 0
    assert 0 < samples[("edgespec:spec_controller_acceptance", (("position", "1"),))] < 1


@pytest.mark.parametrize("k", ["fast", -1, 65, 2.5])
def test_a_bad_draft_length_is_a_400(base_url: str, k: object) -> None:
    body = {"prompt": PROMPT, "max_tokens": 4, "num_speculative_tokens": k}
    response = httpx.post(f"{base_url}/completions", json=body, timeout=10)
    assert response.status_code == 400
    assert "num_speculative_tokens" in response.text


def test_streamed_chat_matches_the_whole_response(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Tell me about hash maps."}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=25, extra_body=GREEDY | NO_EOS)
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=25,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=GREEDY | NO_EOS,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    content = [chunk for chunk in chunks if chunk.choices]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in content) == whole.choices[0].message.content
    assert [chunk.choices[0].finish_reason for chunk in content][-1] == "length"
    assert all(chunk.choices[0].finish_reason is None for chunk in content[:-1])
    assert all(chunk.usage is None for chunk in content)
    final = chunks[-1]  # include_usage: one last chunk with empty choices and the whole usage
    assert final.choices == [] and final.usage.completion_tokens == 25
    assert final.usage.model_extra["speculation"]["num_drafts"] >= 5
    assert whole.choices[0].message.role == "assistant" and whole.object == "chat.completion"


def test_completion_logprobs_are_the_targets(client: openai.OpenAI, tiny_pair: TinyPair, tokenizer) -> None:
    response = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=12, logprobs=3, extra_body=GREEDY | NO_EOS
    )
    choice = response.choices[0]
    ids = choice.model_extra["token_ids"]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 12
    expected = reference_logprobs(tiny_pair.target, prompt_ids(tokenizer), ids)
    assert logprobs.token_logprobs == pytest.approx(expected, abs=1e-4)
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert 1 <= len(top) <= 4 and math.isclose(max(top.values()), chosen, abs_tol=1e-5)  # greedy: top-1
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)


def test_chat_logprobs_shape(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=6,
        logprobs=True,
        top_logprobs=2,
        extra_body=NO_EOS,
    )
    content = response.choices[0].logprobs.content
    assert len(content) == 6
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.bytes == list(entry.token.encode())
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob


def test_seeded_sampling_is_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> list[int]:
        body = NO_EOS | {"seed": seed, "top_k": 50}
        response = client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=20, temperature=1.0, extra_body=body
        )
        return response.choices[0].model_extra["token_ids"]

    first = sample(7)
    assert sample(7) == first
    assert any(sample(seed) != first for seed in (8, 9, 10))


def test_stop_strings_and_stop_token_ids(client: openai.OpenAI, tokenizer) -> None:
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, extra_body=GREEDY | NO_EOS)
    text, ids = full.choices[0].text, full.choices[0].model_extra["token_ids"]
    stop = text[10:13]
    cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, stop=[stop], extra_body=GREEDY | NO_EOS)
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < 30
    stop_id = ids[8]
    body = GREEDY | NO_EOS | {"stop_token_ids": [stop_id]}
    by_id = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, extra_body=body)
    assert by_id.choices[0].model_extra["token_ids"] == ids[: ids.index(stop_id)]
    assert by_id.choices[0].finish_reason == "stop"


def test_streamed_stop_string_never_leaks(client: openai.OpenAI) -> None:
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, extra_body=GREEDY | NO_EOS)
    text = full.choices[0].text
    stop = text[12:15]
    stream = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=30, stop=stop, stream=True, extra_body=GREEDY | NO_EOS
    )
    chunks = list(stream)
    assert "".join(chunk.choices[0].text for chunk in chunks) == text[: text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_concurrent_requests_all_complete_correctly(base_url: str, tiny_pair: TinyPair, tokenizer) -> None:
    prompts = [f"{PROMPT} {i}" for i in range(8)]

    async def run_all() -> list[list[int]]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as client:
            responses = await asyncio.gather(
                *(
                    client.completions.create(model="tiny", prompt=p, max_tokens=16, extra_body=GREEDY | NO_EOS)
                    for p in prompts
                )
            )
        return [r.choices[0].model_extra["token_ids"] for r in responses]

    outputs = asyncio.run(run_all())
    assert outputs == [reference_greedy(tiny_pair.target, prompt_ids(tokenizer, p), 16) for p in prompts]


def test_models_lists_the_served_name_and_both_engines_numerics(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [model.id for model in models] == ["tiny"]
    assert models[0].model_extra["max_model_len"] == 512
    assert models[0].model_extra["target_numerics"].startswith("torch: exact")  # from the cloud's handshake
    assert models[0].model_extra["draft_numerics"].startswith("torch: exact")


def test_client_leaving_mid_stream_frees_the_cloud_session(base_url: str, cloud: Cloud) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
    stream = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=400, stream=True, extra_body=NO_EOS | {"num_speculative_tokens": 1}
    )
    next(iter(stream))
    assert cloud.sessions_active() == 1
    stream.close()
    assert eventually(lambda: cloud.sessions_active() == 0)


def test_metrics_parse_and_move(client: openai.OpenAI, base_url: str, cloud: Cloud) -> None:
    edge_metrics = base_url.removesuffix("/v1") + "/metrics"
    before = {
        "drafts": metric_value(edge_metrics, "edgespec:spec_decode_num_drafts_total"),
        "accepted_pos0": metric_value(
            edge_metrics, "edgespec:spec_decode_num_accepted_tokens_per_pos_total", position="0"
        ),
        "ttft": metric_value(edge_metrics, "edgespec:time_to_first_token_seconds_count"),
        "tokens": metric_value(edge_metrics, "edgespec:generation_tokens_total", mode="spec"),
        "cloud_drafts": metric_value(cloud.metrics_url, "edgespec:cloud_spec_decode_num_drafts_total"),
    }
    client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, extra_body=GREEDY | NO_EOS)
    assert metric_value(edge_metrics, "edgespec:spec_decode_num_drafts_total") > before["drafts"]
    assert metric_value(edge_metrics, "edgespec:time_to_first_token_seconds_count") == before["ttft"] + 1
    assert metric_value(edge_metrics, "edgespec:generation_tokens_total", mode="spec") == before["tokens"] + 20
    assert metric_value(cloud.metrics_url, "edgespec:cloud_spec_decode_num_drafts_total") > before["cloud_drafts"]
    assert metric_value(edge_metrics, "edgespec:link_up") == 1
    assert metric_value(edge_metrics, "edgespec:num_requests_running") == 0


def test_client_leaving_a_plain_request_cancels_it(base_url: str, cloud: Cloud) -> None:
    edge_metrics = base_url.removesuffix("/v1") + "/metrics"
    aborted = metric_value(edge_metrics, "edgespec:request_success_total", mode="spec", finish_reason="abort")
    body = {"prompt": PROMPT, "max_tokens": 450, "ignore_eos": True, "num_speculative_tokens": 1}
    # The client leaves once the edge is generating: a client gone before the edge read its request
    # (a timed-out client on a busy machine) leaves nothing to cancel.
    with _posted(f"{base_url}/completions", body):
        assert eventually(lambda: metric_value(edge_metrics, "edgespec:num_requests_running") == 1)
    assert eventually(
        lambda: (
            metric_value(edge_metrics, "edgespec:request_success_total", mode="spec", finish_reason="abort")
            == aborted + 1
        )
    )
    assert eventually(lambda: cloud.sessions_active() == 0)


@contextlib.contextmanager
def _posted(url: str, body: dict[str, object]) -> Iterator[None]:
    """A plain POST sent over a socket of our own, closed (the client gone) on leaving."""
    address = httpx.URL(url)
    content = json.dumps(body).encode()
    head = f"POST {address.raw_path.decode()} HTTP/1.1\r\nHost: {address.host}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((address.host, address.port)) as connection:
        connection.sendall(f"{head}Content-Length: {len(content)}\r\n\r\n".encode() + content)
        yield
