"""`edgespec cloud` and `edgespec edge` as child processes: for the demo, the benchmarks and the
integration tests. Each prints one ready line naming the address it bound (port 0 picks one)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgespec.config import CLOUD_READY_LINE as CLOUD_READY
from edgespec.config import EDGE_READY_LINE as EDGE_READY


@contextlib.contextmanager
def cloud_process(model: Path | str, *extra_args: str, log: Path | None = None) -> Iterator[int]:
    """Start a cloud on a free loopback port; yields the port; stops the process afterwards."""
    with server_process(["cloud", "--model", str(model), "--port", "0", *extra_args], CLOUD_READY, log) as ready:
        yield ready_port(ready)


@contextlib.contextmanager
def edge_process(model: Path | str, cloud_port: int, *extra_args: str, log: Path | None = None) -> Iterator[int]:
    """Start an edge API on a free loopback port against a local cloud; yields the API port."""
    command = ["edge", "--model", str(model), "--cloud", f"127.0.0.1:{cloud_port}", "--port", "0", *extra_args]
    with server_process(command, EDGE_READY, log) as ready:
        yield ready_port(ready)


@contextlib.contextmanager
def server_process(args: list[str], ready_line: str, log: Path | None) -> Iterator[str]:
    """Run `edgespec ARGS` until its ready line; yields that line; stops the process afterwards."""
    with started_process(args, ready_line, log) as started:
        yield started.ready


@dataclass(frozen=True)
class Started:
    process: subprocess.Popen[str]
    ready: str  # its ready line


@contextlib.contextmanager
def started_process(args: list[str], ready_line: str, log: Path | None) -> Iterator[Started]:
    """As server_process, yielding the process too."""
    with spawned(args, log) as process:
        yield Started(process, wait_until_ready(process, ready_line, log))


@contextlib.contextmanager
def spawned(args: list[str], log: Path | None) -> Iterator[subprocess.Popen[str]]:
    """`edgespec ARGS` started (not yet ready: see wait_until_ready); stopped afterwards."""
    command = [sys.executable, "-m", "edgespec", *args]
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("w")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
        stack.callback(stop, process)
        yield process


def free_port() -> int:
    """A loopback port nothing listens on at the moment of asking (for starting peers together)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(process: subprocess.Popen[str], ready_line: str, log: Path | None) -> str:
    """Read the child's stdout up to its ready line and return that line."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(ready_line):
            return line
    details = log.read_text()[-2000:] if log is not None else "(no log kept)"
    name = ready_line.removesuffix(" ready")
    raise RuntimeError(f"{name} exited with code {process.wait()} before it was ready:\n{details}")


def ready_field(line: str, name: str) -> str:
    """A `name=value` field of a ready line."""
    for word in line.split():
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    raise ValueError(f"no {name}= in {line!r}")


def ready_port(ready: str) -> int:
    """The port of the address after ' on ' in a ready line."""
    address = ready.split(" on ", 1)[1].split()[0]
    return int(address.rsplit(":", 1)[1])


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
