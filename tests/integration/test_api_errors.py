"""Every error the API promises, with OpenAI's error JSON and the right status: 400 for bad bodies,
401 for a missing or wrong key, 503 when the cloud is unreachable and the policy says so."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import TinyPair
from tests.integration.api_fixtures import edge_url, eventually, free_port, metric_value
from tests.reference import reference_greedy

KEY = "test-key"


@pytest.fixture(scope="module")
def guarded_url(tiny_pair: TinyPair, tiny_cloud: int) -> Iterator[str]:
    with edge_url(tiny_pair.draft, tiny_cloud, "--api-key", KEY) as url:
        yield url


def post(url: str, body: object, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/completions", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "model": "gpt-4"}, "unknown model"),
        ({"prompt": "x", "max_tokens": -5}, "max_tokens"),
        ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"prompt": "x", "temperature": "hot"}, "temperature"),
        ({"prompt": "x", "top_p": 0}, "top_p"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "stop": ["a"] * 17}, "stop"),
        ({"prompt": "x", "logprobs": 21}, "logprobs"),
        ({"prompt": "x", "mode": "turbo"}, "mode"),
        ({"prompt": "x", "num_speculative_tokens": 65}, "num_speculative_tokens"),
        ({"prompt": "x", "stream": "yes"}, "stream"),
        ({"prompt": ["a", "b"]}, "one prompt"),
        ({"prompt": [1, 2, 100000]}, "outside the vocabulary"),
        ({"prompt": "hello " * 400, "max_tokens": 16}, "context"),
        ({"prompt": "x", "max_tokens": 600}, "context"),
        ({}, "prompt"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_bodies_get_400(guarded_url: str, body: object, message: str) -> None:
    response = post(guarded_url, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"]


def test_colocated_mode_on_a_cloud_without_a_draft_gets_400(guarded_url: str) -> None:
    response = post(guarded_url, {"prompt": "x", "mode": "colocated"})
    assert response.status_code == 400 and "no draft model of its own" in response.json()["error"]["message"]


def test_unparsable_json_gets_400(guarded_url: str) -> None:
    response = httpx.post(
        f"{guarded_url}/completions",
        content=b'{"prompt": "x",',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_missing_key_gets_401(guarded_url: str) -> None:
    response = post(guarded_url, {"prompt": "x"}, key=None)
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_wrong_key_gets_401(guarded_url: str) -> None:
    client = openai.OpenAI(base_url=guarded_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.completions.create(model="tiny", prompt="x", max_tokens=2)


def test_the_right_key_is_served_and_probes_need_none(guarded_url: str) -> None:
    client = openai.OpenAI(base_url=guarded_url, api_key=KEY, max_retries=0)
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2).usage.completion_tokens == 2
    root = guarded_url.removesuffix("/v1")
    assert httpx.get(f"{root}/health").status_code == 200
    assert httpx.get(f"{root}/metrics").status_code == 200


@pytest.fixture(scope="module")
def failing_url(tiny_pair: TinyPair) -> Iterator[str]:
    """An edge whose cloud is not there, with the fail policy."""
    with edge_url(tiny_pair.draft, free_port(), "--on-cloud-loss", "fail") as url:
        yield url


def test_fail_policy_answers_503_at_once(failing_url: str) -> None:
    client = openai.OpenAI(base_url=failing_url, api_key="unused", max_retries=0)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.completions.create(model="tiny", prompt="x", max_tokens=4)
    assert caught.value.status_code == 503 and "unreachable" in caught.value.message
    assert time.monotonic() - started < 2
    with pytest.raises(openai.InternalServerError):  # streaming fails with the same status, before any event
        client.completions.create(model="tiny", prompt="x", max_tokens=4, stream=True)
    health = httpx.get(failing_url.removesuffix("/v1") + "/health")
    assert health.status_code == 503 and health.json()["cloud"]["state"] == "down"


def test_edge_mode_needs_no_cloud(failing_url: str, tiny_pair: TinyPair) -> None:
    client = openai.OpenAI(base_url=failing_url, api_key="unused", max_retries=0)
    response = client.completions.create(
        model="tiny", prompt=[5, 6, 7], max_tokens=8, temperature=0, extra_body={"mode": "edge", "ignore_eos": True}
    )
    assert response.usage.completion_tokens == 8


def test_wait_policy_gives_up_after_its_timeout(tiny_pair: TinyPair) -> None:
    with edge_url(tiny_pair.draft, free_port(), "--cloud-wait-timeout", "1") as url:
        started = time.monotonic()
        response = post(url, {"prompt": "x", "max_tokens": 4}, key=None)
        assert response.status_code == 503 and "did not come back within 1 s" in response.json()["error"]["message"]
        assert 0.9 < time.monotonic() - started < 10


def test_draft_policy_answers_with_the_draft_alone_and_says_so(tiny_pair: TinyPair) -> None:
    with edge_url(tiny_pair.draft, free_port(), "--on-cloud-loss", "draft") as url:
        body = {"prompt": [5, 6, 7], "max_tokens": 10, "temperature": 0, "ignore_eos": True, "return_token_ids": True}
        response = post(url, body, key=None).json()
    assert response["usage"]["fallback_tokens"] == 10
    assert response["choices"][0]["token_ids"] == reference_greedy(tiny_pair.draft, [5, 6, 7], 10)


def test_a_client_leaving_while_its_request_waits_for_the_cloud_ends_it(tiny_pair: TinyPair) -> None:
    with edge_url(tiny_pair.draft, free_port(), "--cloud-wait-timeout", "60") as url:
        metrics = url.removesuffix("/v1") + "/metrics"
        body = {"prompt": "x", "max_tokens": 4, "stream": True}
        with pytest.raises(httpx.ReadTimeout):  # the policy holds the request; the client gives up first
            httpx.post(f"{url}/completions", json=body, timeout=httpx.Timeout(10, read=0.5))
        assert eventually(lambda: metric_value(metrics, "edgespec:num_requests_running") == 0, timeout_s=5)
        aborted = metric_value(metrics, "edgespec:request_success_total", mode="spec", finish_reason="abort")
        assert aborted == 1
