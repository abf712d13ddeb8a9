"""The cloud process killed and restarted in the middle of a streamed request. With `wait` the
stream pauses, the edge reconnects and re-opens the session with the full context, and the greedy
text is identical to an uninterrupted run; with `draft` the stream completes on the draft alone
and says so. Both sides end with no session left."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import TinyPair
from tests.integration.api_fixtures import (
    LONG_BODY,
    LONG_MAX_TOKENS,
    LONG_PROMPT,
    KillableEdge,
    RestartableCloud,
    cloud_with_metrics,
    complete_long,
    edge_url,
    eventually,
    metric_value,
    open_stream,
    read_stream,
)


@pytest.fixture
def cloud(tiny_pair: TinyPair) -> Iterator[RestartableCloud]:
    cloud = RestartableCloud(tiny_pair.target)
    cloud.start()
    yield cloud
    cloud.kill()


def stream_with_restart(client: openai.OpenAI, cloud: RestartableCloud) -> tuple[list[int], dict, str]:
    """Stream a request, killing and restarting the cloud once its second chunk has arrived."""
    chunks = open_stream(client, LONG_PROMPT, LONG_MAX_TOKENS, LONG_BODY)
    ids: list[int] = []
    read_stream(itertools.islice(chunks, 1), ids)
    second = next(chunks)
    cloud.kill()
    cloud.start()
    usage, finish = read_stream(itertools.chain([second], chunks), ids)
    return ids, usage, finish


def test_wait_policy_continues_exactly_after_a_restart(tiny_pair: TinyPair, cloud: RestartableCloud) -> None:
    with edge_url(tiny_pair.draft, cloud.port, "--on-cloud-loss", "wait") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        uninterrupted = complete_long(client)
        ids, usage, finish = stream_with_restart(client, cloud)
        metrics = url.removesuffix("/v1") + "/metrics"
        assert usage["speculation"]["link_losses"] >= 1  # the restart really fell inside the request
        assert ids == uninterrupted.choices[0].model_extra["token_ids"]
        assert finish == "length" and usage["fallback_tokens"] == 0
        assert metric_value(metrics, "edgespec:link_reconnects_total") >= 1
        assert eventually(lambda: cloud.sessions_active() == 0)
        assert metric_value(metrics, "edgespec:num_requests_running") == 0


def test_draft_policy_completes_the_stream_and_marks_it(tiny_pair: TinyPair, cloud: RestartableCloud) -> None:
    with edge_url(tiny_pair.draft, cloud.port, "--on-cloud-loss", "draft") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        ids, usage, finish = stream_with_restart(client, cloud)
        metrics = url.removesuffix("/v1") + "/metrics"
        assert len(ids) == LONG_MAX_TOKENS and finish == "length"
        assert usage["fallback_tokens"] > 0
        assert metric_value(metrics, "edgespec:fallback_tokens_total") == usage["fallback_tokens"]
        assert eventually(lambda: cloud.sessions_active() == 0)


def test_an_edge_killed_mid_stream_leaves_no_session_on_the_cloud(tiny_pair: TinyPair) -> None:
    with cloud_with_metrics(tiny_pair.target) as cloud:
        edge = KillableEdge(tiny_pair.draft, cloud.port)
        try:
            client = openai.OpenAI(base_url=edge.url, api_key="unused", max_retries=0, timeout=60)
            stream = client.completions.create(
                model="tiny", prompt=LONG_PROMPT, max_tokens=LONG_MAX_TOKENS, stream=True, extra_body=LONG_BODY
            )
            next(iter(stream))
            assert cloud.sessions_active() == 1
        finally:
            edge.kill()
        assert eventually(lambda: cloud.sessions_active() == 0)
        restarted = KillableEdge(tiny_pair.draft, cloud.port)  # a new edge is served at once
        try:
            client = openai.OpenAI(base_url=restarted.url, api_key="unused", max_retries=0, timeout=60)
            done = complete_long(client, 8)
            assert done.usage.completion_tokens == 8
        finally:
            restarted.kill()
