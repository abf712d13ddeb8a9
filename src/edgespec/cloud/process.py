"""`edgespec cloud` as a child process: for the demo, the benchmarks and the integration tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from edgespec.cloud.launch import READY_LINE


@contextlib.contextmanager
def cloud_process(model: Path, *extra_args: str, log: Path | None = None) -> Iterator[int]:
    """Start a cloud on a free loopback port; yields the port; stops the process afterwards."""
    command = [sys.executable, "-m", "edgespec", "cloud", "--model", str(model), "--port", "0", *extra_args]
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("w")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stack.callback(_stop, process)
        yield wait_until_ready(process, log)


def wait_until_ready(process: subprocess.Popen[str], log: Path | None) -> int:
    """Read the cloud's stdout up to its ready line; returns the bound port."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(READY_LINE):
            address = line.split(" on ", 1)[1].split()[0]
            return int(address.rsplit(":", 1)[1])
    details = log.read_text()[-2000:] if log is not None else "(no log kept)"
    raise RuntimeError(f"the cloud exited with code {process.wait()} before it was ready:\n{details}")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
