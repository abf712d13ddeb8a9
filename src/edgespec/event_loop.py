"""The event loop the cloud serves on: uvloop where it is installed (a dependency on Linux and
macOS), asyncio's own elsewhere. A verify batch's verdicts leave the cloud one session at a time
through this loop while the GPU waits for the next drafts, so its cost per message is capacity:
uvloop's sockets and callbacks are C (docs/gpu-verifier.md has the figures)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
