"""The verdict of a load run: failures, latency percentiles, and whether memory and open work came
back to their baseline."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from edgespec.bench.load import LoadPlan, Phase
from edgespec.bench.serve.summary import summarize

PERCENTILES = (50.0, 90.0, 99.0)
LATENCIES = ("ttft", "itl", "e2el")


def load_report(
    plan: LoadPlan,
    warmup: Phase,
    load: Phase,
    rss: dict[str, tuple[float, float]],  # per process: (baseline, after) MiB
    open_after: dict[str, float],
    rss_tolerance_mib: float,
) -> dict[str, object]:
    figures = summarize(load.outputs, load.duration_s, PERCENTILES)
    failed = [o.error for o in warmup.outputs + load.outputs if not o.success]
    memory = {name: _memory(before, load.peak_rss_mib[name], after) for name, (before, after) in rss.items()}
    checks = {
        "no failed request": not failed,
        "no open session or request afterwards": not any(open_after.values()),
        f"memory back within {rss_tolerance_mib:g} MiB of baseline": all(
            m["growth_mib"] <= rss_tolerance_mib for m in memory.values()
        ),
    }
    latency = {key: value for key, value in figures.items() if key.endswith("_ms") and key.split("_")[-2] in LATENCIES}
    return {
        "plan": asdict(plan),
        "requests": figures["completed"],
        "failed": len(failed),
        "errors": sorted(set(failed))[:5],
        "output_tokens": figures["total_output_tokens"],
        "output_throughput": figures["output_throughput"],
        "latency_ms": latency,
        "max_itl_ms": max((gap * 1000 for o in load.outputs for gap in o.itl), default=0.0),
        "memory": memory,
        "open_after": open_after,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _memory(baseline: float, peak: float, after: float) -> dict[str, float]:
    return {"baseline_mib": baseline, "peak_mib": peak, "after_mib": after, "growth_mib": after - baseline}


def print_load_report(report: dict[str, object]) -> None:
    latency = report["latency_ms"]
    assert isinstance(latency, dict)
    print(f"requests {report['requests']}, failed {report['failed']}, output {report['output_tokens']} tokens")
    print(f"output throughput {report['output_throughput']:.1f} tok/s")
    for name in LATENCIES:
        row = ", ".join(f"p{int(p)} {latency[f'p{int(p)}_{name}_ms']:.1f}" for p in PERCENTILES)
        print(f"{name.upper():>5} ms: median {latency[f'median_{name}_ms']:.1f}, {row}")
    print(f"  max ITL {report['max_itl_ms']:.1f} ms")
    memory = report["memory"]
    assert isinstance(memory, dict)
    print(f"{'process':<8} {'baseline':>9} {'peak':>9} {'after':>9} {'growth':>8}  (RSS, MiB)")
    for name, m in memory.items():
        print(f"{name:<8} {m['baseline_mib']:9.1f} {m['peak_mib']:9.1f} {m['after_mib']:9.1f} {m['growth_mib']:+8.1f}")
    for error in report["errors"]:  # type: ignore[attr-defined]
        print(f"error: {error}")
    checks = report["checks"]
    assert isinstance(checks, dict)
    for check, passed in checks.items():
        print(f"[{'pass' if passed else 'FAIL'}] {check}")


def save_report(report: dict[str, object], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
