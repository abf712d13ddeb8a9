"""`edgespec bench capacity --plot`: the capacity ratio against the tokens each session generates,
and how busy each mode kept the GPU (the gap between speculation's calls is what the ratio loses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed

import matplotlib.pyplot as plt

MODE_LABELS = {"spec": "speculation (edges draft)", "cloud": "batched cloud decoding"}


def plot_capacity(figures: dict[str, Any], path: Path) -> Path:
    runs = sorted(figures["runs"], key=lambda run: run["plan"]["budget"])
    budgets = [run["plan"]["budget"] for run in runs]
    plan = runs[0]["plan"]
    figure, (ratio_axes, busy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    ratios = [run["ratio"] for run in runs]
    ratio_axes.plot(budgets, ratios, "o-", color="tab:blue")
    for budget, ratio in zip(budgets, ratios, strict=True):
        ratio_axes.annotate(f"{ratio:.2f}x", (budget, ratio), textcoords="offset points", xytext=(0, 6), ha="center")
    ratio_axes.set(
        xlabel="new tokens per session", ylabel="output tokens per GPU-second, spec / cloud",
        title=f"{plan['sessions']} sessions, α = {plan['alpha']}, k = {plan['k']}",
    )  # fmt: skip
    ratio_axes.set_ylim(0, 1.15 * max(ratios))  # room for the labels
    for mode, number in (("spec", 0), ("cloud", 1)):
        busy = [100 * (run["phases"][number]["tally"] or {}).get("busy", 0.0) for run in runs]
        busy_axes.plot(budgets, busy, "o-", label=MODE_LABELS[mode])
    busy_axes.set(
        xlabel="new tokens per session", ylabel="GPU busy (%)", title=f"{figures['arch']} on {figures['device']}"
    )
    busy_axes.set_ylim(0, 100)
    busy_axes.legend(fontsize=8)
    for axes in (ratio_axes, busy_axes):
        axes.set_xscale("log", base=2)
        axes.margins(x=0.1)  # the end points' labels stay inside
        axes.set_xticks(budgets, [str(budget) for budget in budgets])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
