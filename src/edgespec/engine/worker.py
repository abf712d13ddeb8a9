"""One thread per model: forward passes are synchronous and must not block the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class ModelWorker:
    """Runs model work in submission order on a single thread."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.start(fn, *args, **kwargs)

    def start(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> asyncio.Future[R]:
        """Queue work now (not when a task first runs) and return its result's future."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> None:
        """Queue work without waiting for it: cleanup that must happen even in a cancelled task,
        after any forward pass still running on the same data. A no-op once shut down."""
        with contextlib.suppress(RuntimeError):  # the executor refuses work after shutdown
            self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, last: Callable[[], object] | None = None) -> None:
        """Refuse new work. Queued work still runs (it is cleanup that frees KV), then `last`
        (freeing the model: it must not run while a forward pass uses it)."""
        if last is not None:
            self.submit(last)
        self._executor.shutdown(wait=False)
