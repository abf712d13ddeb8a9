"""Where a verify step's GPU time goes: `edgespec bench verifier --profile` records a few replayed
steps of one cell with the PyTorch profiler (kernels inside CUDA graphs included) and prints the
kernels that take the most time per step, grouped by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

PROFILED_STEPS = 10
SHOWN = 15


def print_profile(step: Callable[[], None], label: str) -> None:
    step()  # captured and warm before recording
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as recording:
        for _ in range(PROFILED_STEPS):
            step()
        torch.cuda.synchronize()
    kernels: dict[str, tuple[float, int]] = {}
    for event in recording.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            total, count = kernels.get(event.name, (0.0, 0))
            kernels[event.name] = (total + event.device_time, count + 1)
    per_step_ms = sum(total for total, _ in kernels.values()) / PROFILED_STEPS / 1000
    launches = sum(count for _, count in kernels.values()) // PROFILED_STEPS
    print(f"profile of {label}: {per_step_ms:.2f} ms of kernels per step, {launches} kernels")
    for name, (total, count) in sorted(kernels.items(), key=lambda item: -item[1][0])[:SHOWN]:
        print(f"  {total / PROFILED_STEPS / 1000:7.3f} ms  {count // PROFILED_STEPS:4d}x  {name[:90]}")
