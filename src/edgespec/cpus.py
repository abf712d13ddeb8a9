"""Pinning a process to CPU cores, so edge and cloud on one machine do not share cores (the
benchmarks' setting: one core each) and measurements stop depending on the scheduler."""

from __future__ import annotations

import os


def parse_cpus(text: str) -> set[int]:
    """`0`, `0,2` or `0-3` (mixed freely) → a set of core numbers this process may use."""
    cores: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"--cpus must look like 0,2 or 0-3, got {text!r}")
        cores.update(range(int(first), int(last or first) + 1))
    allowed = os.sched_getaffinity(0)
    if not cores <= allowed:
        raise ValueError(f"--cpus {text} names cores this machine does not offer (allowed: {sorted(allowed)})")
    return cores


def pin(text: str | None) -> None:
    """Restrict this process (and threads it starts later) to the given cores."""
    if text:
        os.sched_setaffinity(0, parse_cpus(text))
