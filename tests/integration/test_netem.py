"""The kernel path: a cloud process in its own network namespace, reached over a veth pair, with
`tc netem` shaping where the kernel has it. Skipped without root, iproute2 or namespaces."""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator

import pytest

from edgespec import netem
from edgespec.cloud.launch import READY_LINE
from edgespec.config import LinkConfig, Mode, ModelConfig
from edgespec.edge.launch import start_edge
from edgespec.edge.runtime import GenerationRequest
from edgespec.processes import ready_port, stop, wait_until_ready
from tests.conftest import TinyPair
from tests.reference import reference_greedy

TOKEN = "netem-test-token"


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        return False
    probe = subprocess.run(["ip", "netns", "add", "edgespec-probe"], capture_output=True)
    subprocess.run(["ip", "netns", "delete", "edgespec-probe"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs root, iproute2 and network namespaces")


@pytest.fixture
def namespaced_cloud(tiny_pair: TinyPair, request: pytest.FixtureRequest) -> Iterator[int]:
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
    process = subprocess.Popen(
        netem.run_in_cloud_namespace(command), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        yield ready_port(wait_until_ready(process, READY_LINE, log=None))
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
def test_edge_reaches_a_cloud_in_a_namespace(namespaced_cloud: int, tiny_pair: TinyPair) -> None:
    rtt, tokens = asyncio.run(_pings_and_output(namespaced_cloud, str(tiny_pair.draft)))
    assert tokens == reference_greedy(tiny_pair.target, [5, 6, 7, 8], 16)
    assert rtt < 0.02


@pytest.mark.parametrize("namespaced_cloud", [netem.Shaping(rtt_ms=40)], indirect=True)
def test_netem_shapes_the_path(namespaced_cloud: int, tiny_pair: TinyPair) -> None:
    rtt, tokens = asyncio.run(_pings_and_output(namespaced_cloud, str(tiny_pair.draft)))
    assert 0.038 <= rtt < 0.080
    assert tokens == reference_greedy(tiny_pair.target, [5, 6, 7, 8], 16)
