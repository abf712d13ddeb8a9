"""`edgespec bench adapt` from the command line: flags, the run, a JSON record, a plot, a verdict."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import asdict
from pathlib import Path

from edgespec.bench.adapt import AdaptPlan, Exchange, exchanges_to_recover, run_adapt, windowed_rates


def add_adapt_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rtt-before-ms", type=float, default=10.0)
    parser.add_argument("--rtt-after-ms", type=float, default=100.0)
    parser.add_argument("--exchanges-before", type=int, default=40, help="auto's rounds or bursts before the step")
    parser.add_argument("--exchanges-after", type=int, default=100)
    parser.add_argument("--k", default="2,3,4,6,8", help="fixed draft lengths measured as the reference")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--draft", default="demo-draft")
    parser.add_argument("--target", default="demo-target")
    parser.add_argument("--no-pin", action="store_true", help="do not pin cloud and edge to one core each")
    parser.add_argument("--out", default="adapt-results", help="folder for results.json and adapt.png")


def run_adapt_command(args: argparse.Namespace) -> None:
    plan = _plan(args)
    print(
        f"adapt: auto at {plan.rtt_before_ms:g} ms for {plan.exchanges_before} exchanges, then "
        f"{plan.rtt_after_ms:g} ms for {plan.exchanges_after}; then the references at {plan.rtt_after_ms:g} ms",
        flush=True,
    )
    exchanges, references = asyncio.run(run_adapt(plan))
    best_label = max(references, key=references.__getitem__)
    window = len(plan.prompts)  # requests per window: one of each prompt
    recovered = exchanges_to_recover(exchanges, references[best_label], window)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "plan": asdict(plan),
        "references_tokens_per_s": references,
        "best_reference": best_label,
        "exchanges_to_recover": recovered,
        "window_requests": window,
        "exchanges": [asdict(e) for e in exchanges],
    }
    (out / "results.json").write_text(json.dumps(record, indent=1))
    _plot(exchanges, references, (best_label, window), recovered, out / "adapt.png")
    print(_summary(exchanges, references, best_label, recovered))


def _plan(args: argparse.Namespace) -> AdaptPlan:
    if args.exchanges_before < 1 or args.exchanges_after < 1:
        raise ValueError("--exchanges-before and --exchanges-after must be at least 1")
    if args.rtt_before_ms < 0 or args.rtt_after_ms < 0 or args.max_tokens < 2:
        raise ValueError("RTTs must not be negative and --max-tokens must be at least 2")
    try:
        ks = tuple(int(k) for k in args.k.split(","))
    except ValueError:
        raise ValueError(f"--k must be comma-separated numbers, got {args.k!r}") from None
    return AdaptPlan(
        rtt_before_ms=args.rtt_before_ms,
        rtt_after_ms=args.rtt_after_ms,
        exchanges_before=args.exchanges_before,
        exchanges_after=args.exchanges_after,
        reference_ks=ks,
        max_tokens=args.max_tokens,
        draft=args.draft,
        target=args.target,
        pin=not args.no_pin and len(os.sched_getaffinity(0)) >= 2,
    )


def _summary(exchanges: list[Exchange], references: dict[str, float], best: str, recovered: int | None) -> str:
    refs = ", ".join(f"{label} {rate:.2f}" for label, rate in references.items())
    after = [e for e in exchanges if e.after_step]
    rate = sum(e.tokens for e in after) / sum(e.seconds for e in after)
    verdict = f"back within 5% of {best} after {recovered} exchanges" if recovered else "never back within 5%"
    return f"references (tok/s): {refs}\nauto after the step: {rate:.2f} tok/s overall; {verdict}"


def _plot(
    exchanges: list[Exchange], references: dict[str, float], best_and_window: tuple[str, int], recovered: int | None,
    path: Path,
) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best, window = best_and_window
    before = sum(not e.after_step for e in exchanges)
    figure, (choices, rates) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    xs = [i - before for i in range(len(exchanges))]
    ks = [0 if e.choice == "cloud" else int(e.choice) for e in exchanges]
    choices.step(xs, ks, where="post", color="C3")
    choices.set(ylabel="k chosen (0: cloud burst)", title="auto through an RTT step")
    windowed = windowed_rates(exchanges, window)
    label = f"auto, last {window} requests"
    rates.plot([x for x, _ in windowed], [rate for _, rate in windowed], color="C3", marker=".", label=label)
    for label, rate in references.items():
        style = "-" if label == best else ":"
        rates.axhline(rate, linestyle=style, linewidth=1, color="black" if label == "cloud" else "gray")
        rates.annotate(label, (xs[-1], rate), fontsize=7, va="bottom", ha="right")
    rates.axhspan(0.95 * references[best], references[best], color="green", alpha=0.15, label="within 5% of the best")
    if recovered is not None:
        rates.axvline(recovered, color="green", alpha=0.6)
    for axes in (choices, rates):
        axes.axvline(0, color="red", alpha=0.5)
    rates.set(xlabel="exchanges after the RTT step", ylabel="output tokens/s")
    rates.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
