"""One edge, two cloud processes (`--cloud a,b`): sessions are spread by load and stay on their
cloud; when one cloud dies mid-stream, its requests re-open on the other with their whole context
and the greedy text is unchanged. Health and placement show in /health and /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import TinyPair
from tests.integration.api_fixtures import (
    LONG_BODY,
    LONG_MAX_TOKENS,
    LONG_PROMPT,
    RestartableCloud,
    complete_long,
    edge_url,
    eventually,
    metric_value,
    open_stream,
    read_stream,
)


@pytest.fixture
def clouds(tiny_pair: TinyPair) -> Iterator[list[RestartableCloud]]:
    clouds = [RestartableCloud(tiny_pair.target) for _ in range(2)]
    for cloud in clouds:
        cloud.start()
    yield clouds
    for cloud in clouds:
        if cloud.process is not None and cloud.process.poll() is None:
            cloud.kill()


def address(cloud: RestartableCloud) -> str:
    return f"127.0.0.1:{cloud.port}"


def test_sessions_spread_over_both_clouds_and_survive_losing_one(
    tiny_pair: TinyPair, clouds: list[RestartableCloud]
) -> None:
    both = ",".join(address(cloud) for cloud in clouds)
    with edge_url(tiny_pair.draft, clouds[0].port, "--cloud", both, "--on-cloud-loss", "wait") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
        reference = complete_long(client)
        expected = reference.choices[0].model_extra["token_ids"]

        streams = [open_stream(client, LONG_PROMPT, LONG_MAX_TOKENS, LONG_BODY) for _ in range(2)]
        ids: list[list[int]] = [[], []]
        for number, chunks in enumerate(streams):
            ids[number] += next(chunks).choices[0].model_extra["token_ids"]
        assert [cloud.sessions_active() for cloud in clouds] == [1, 1]  # placed by load: one each

        clouds[0].kill()  # mid-stream for one of the two requests
        usages = [read_stream(chunks, ids[number])[0] for number, chunks in enumerate(streams)]

        assert ids == [expected, expected]
        assert sorted(usage["speculation"]["link_losses"] for usage in usages) == [0, 1]
        assert all(usage["fallback_tokens"] == 0 for usage in usages)
        assert eventually(lambda: clouds[1].sessions_active() == 0)

        metrics = url.removesuffix("/v1") + "/metrics"
        assert metric_value(metrics, "edgespec:cloud_up", cloud=address(clouds[0])) == 0
        assert metric_value(metrics, "edgespec:cloud_up", cloud=address(clouds[1])) == 1
        for cloud in clouds:
            assert metric_value(metrics, "edgespec:cloud_sessions_placed_total", cloud=address(cloud)) >= 1
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()
        assert health["status"] == "ok" and health["cloud"]["state"] == "up"
        assert [c["state"] for c in health["cloud"]["clouds"]] == ["down", "up"]
