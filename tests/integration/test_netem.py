"""The kernel path: a cloud process in its own network namespace, reached over a veth pair, with
`tc netem` shaping where the kernel has it, and the path cut for 5 s in the middle of a request.
Skipped without root, iproute2 or namespaces."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from edgespec import netem
from edgespec.cloud.launch import READY_LINE
from edgespec.config import EdgePolicy, LinkConfig, LossPolicy, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.request import GenerationRequest
from edgespec.edge.runtime import CloudUnavailable, EdgeRuntime
from edgespec.processes import ready_field, ready_port, stop, wait_until_ready
from tests.conftest import TinyPair
from tests.integration.api_fixtures import eventually, metric_value
from tests.reference import reference_greedy

TOKEN = "netem-test-token"


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return False
    probe = subprocess.run(["ip", "netns", "add", "edgespec-probe"], capture_output=True)
    subprocess.run(["ip", "netns", "delete", "edgespec-probe"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs root, iproute2 and network namespaces")


@dataclass(frozen=True)
class NamespacedCloud:
    port: int
    metrics_url: str

    def open_sessions(self) -> float:
        return metric_value(self.metrics_url, "edgespec:cloud_sessions_active")


@pytest.fixture
def namespaced_cloud(tiny_pair: TinyPair, request: pytest.FixtureRequest) -> Iterator[NamespacedCloud]:
    shaping: netem.Shaping = request.param
    netem.down()
    try:
        netem.up(shaping)
    except ValueError as exc:
        if "no netem qdisc" in str(exc):
            pytest.skip(str(exc))
        raise
    command = [sys.executable, "-m", "edgespec", "cloud", "--model", str(tiny_pair.target)]
    command += ["--host", netem.CLOUD_ADDRESS, "--port", "0", "--auth-token", TOKEN, "--threads", "1"]
    command += ["--metrics-port", "0"]
    process = subprocess.Popen(
        netem.run_in_cloud_namespace(command), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        ready = wait_until_ready(process, READY_LINE, log=None)
        yield NamespacedCloud(ready_port(ready), f"http://{ready_field(ready, 'metrics')}/metrics")
    finally:
        stop(process)
        netem.down()
    assert not netem.is_up()


async def _pings_and_output(port: int, draft: str) -> tuple[float, list[int]]:
    link = LinkConfig(host=netem.CLOUD_ADDRESS, port=port, auth_token=TOKEN)
    runtime = await start_edge(ModelConfig(draft), link)
    try:
        assert runtime.links is not None and runtime.links.link is not None
        rtts = [await runtime.links.link.ping() for _ in range(5)]
        request = GenerationRequest([5, 6, 7, 8], 16, mode=Mode.SPEC, ignore_eos=True)
        return statistics.median(rtts), await runtime.generate(request).collect()
    finally:
        await runtime.aclose()


@pytest.mark.parametrize("namespaced_cloud", [netem.Shaping()], indirect=True)
def test_edge_reaches_a_cloud_in_a_namespace(namespaced_cloud: NamespacedCloud, tiny_pair: TinyPair) -> None:
    rtt, tokens = asyncio.run(_pings_and_output(namespaced_cloud.port, str(tiny_pair.draft)))
    assert tokens == reference_greedy(tiny_pair.target, [5, 6, 7, 8], 16)
    assert rtt < 0.02


@pytest.mark.parametrize("namespaced_cloud", [netem.Shaping(rtt_ms=40)], indirect=True)
def test_netem_shapes_the_path(namespaced_cloud: NamespacedCloud, tiny_pair: TinyPair) -> None:
    rtt, tokens = asyncio.run(_pings_and_output(namespaced_cloud.port, str(tiny_pair.draft)))
    assert 0.038 <= rtt < 0.080
    assert tokens == reference_greedy(tiny_pair.target, [5, 6, 7, 8], 16)


CUT_S = 5.0
PROMPT = [5, 6, 7, 8]


@dataclass
class CutOutcome:
    tokens: list[int]
    fallback: int = 0  # tokens the draft made alone
    last_token_at: float = 0.0  # seconds after the request began


async def _generate_through_a_cut(runtime: EdgeRuntime, tokens: int) -> CutOutcome:
    """Stream a request, cutting the path for CUT_S once its first chunk is out."""
    started = time.monotonic()
    restore: asyncio.Task[None] | None = None
    outcome = CutOutcome([])
    request = GenerationRequest(PROMPT, tokens, mode=Mode.SPEC, num_speculative_tokens=2, ignore_eos=True)
    try:
        async for chunk in runtime.generate(request):
            if restore is None:
                await asyncio.to_thread(netem.set_path, up=False)
                restore = asyncio.create_task(_restore_after(CUT_S))
            outcome.tokens += chunk.tokens
            outcome.fallback += len(chunk.tokens) if chunk.fallback else 0
            outcome.last_token_at = time.monotonic() - started
    finally:
        if restore is not None:
            await restore
    return outcome


async def _restore_after(seconds: float) -> None:
    await asyncio.sleep(seconds)
    await asyncio.to_thread(netem.set_path, up=True)


def _cut_mid_request(cloud: NamespacedCloud, draft: str, policy: LossPolicy, tokens: int) -> CutOutcome:
    async def main() -> CutOutcome:
        link = LinkConfig(host=netem.CLOUD_ADDRESS, port=cloud.port, auth_token=TOKEN, keepalive_s=1.0)
        runtime = await start_edge(ModelConfig(draft), link, EdgePolicy(on_cloud_loss=policy, cloud_wait_timeout_s=30))
        try:
            return await _generate_through_a_cut(runtime, tokens)
        finally:
            await runtime.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("namespaced_cloud", [netem.Shaping()], indirect=True)
def test_a_5s_cut_under_wait_gives_the_uninterrupted_text(
    namespaced_cloud: NamespacedCloud, tiny_pair: TinyPair
) -> None:
    outcome = _cut_mid_request(namespaced_cloud, str(tiny_pair.draft), LossPolicy.WAIT, 96)
    assert outcome.tokens == reference_greedy(tiny_pair.target, PROMPT, 96)
    assert outcome.fallback == 0 and outcome.last_token_at >= CUT_S  # it waited the cut out
    assert eventually(lambda: namespaced_cloud.open_sessions() == 0, timeout_s=30)


@pytest.mark.parametrize("namespaced_cloud", [netem.Shaping()], indirect=True)
def test_a_5s_cut_under_draft_keeps_the_stream_going(namespaced_cloud: NamespacedCloud, tiny_pair: TinyPair) -> None:
    outcome = _cut_mid_request(namespaced_cloud, str(tiny_pair.draft), LossPolicy.DRAFT, 400)
    assert len(outcome.tokens) == 400 and outcome.fallback > 0
    assert eventually(lambda: namespaced_cloud.open_sessions() == 0, timeout_s=30)


@pytest.mark.parametrize("namespaced_cloud", [netem.Shaping()], indirect=True)
def test_a_5s_cut_under_fail_ends_the_request_clearly(namespaced_cloud: NamespacedCloud, tiny_pair: TinyPair) -> None:
    with pytest.raises(CloudUnavailable, match="unreachable"):
        _cut_mid_request(namespaced_cloud, str(tiny_pair.draft), LossPolicy.FAIL, 400)
    assert eventually(lambda: namespaced_cloud.open_sessions() == 0, timeout_s=30)
