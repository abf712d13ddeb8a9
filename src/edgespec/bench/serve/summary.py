"""The benchmark's figures with vLLM's definitions and names, and its printed summary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgespec.bench.serve.client import RequestOutput

METRICS = {
    "ttft": "Time to First Token",
    "tpot": "Time per Output Token (excl. 1st token)",
    "itl": "Inter-token Latency",
    "e2el": "End-to-end Latency",
}
MS = 1000


def summarize(outputs: Sequence[RequestOutput], duration: float, percentiles: Sequence[float]) -> dict[str, object]:
    done = [o for o in outputs if o.success]
    total_input = sum(o.prompt_len for o in done)
    total_output = sum(o.output_tokens for o in done)
    result: dict[str, object] = {
        "duration": duration,
        "completed": len(done),
        "failed": len(outputs) - len(done),
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": len(done) / duration,
        "output_throughput": total_output / duration,
        "total_token_throughput": (total_input + total_output) / duration,
        "input_lens": [o.prompt_len for o in outputs],
        "output_lens": [o.output_tokens for o in outputs],
        "ttfts": [o.ttft for o in outputs],
        "itls": [o.itl for o in outputs],
        "generated_texts": [o.generated_text for o in outputs],
        "errors": [o.error for o in outputs],
    }
    samples = {
        "ttft": [o.ttft for o in done],
        "tpot": [(o.latency - o.ttft) / (o.output_tokens - 1) for o in done if o.output_tokens > 1],
        "itl": [gap for o in done for gap in o.itl],
        "e2el": [o.latency for o in done],
    }
    for name, values in samples.items():
        result |= _statistics(name, values, percentiles)
    return result


def _statistics(name: str, values: list[float], percentiles: Sequence[float]) -> dict[str, float]:
    data = np.array(values or [0.0]) * MS
    stats = {
        f"mean_{name}_ms": float(data.mean()),
        f"median_{name}_ms": float(np.median(data)),
        f"std_{name}_ms": float(data.std()),
    }
    return stats | {f"p{_label(p)}_{name}_ms": float(np.percentile(data, p)) for p in percentiles}


def _label(percentile: float) -> str:
    return str(int(percentile)) if float(percentile).is_integer() else str(percentile)


def print_summary(result: dict[str, object], printed: Sequence[str], percentiles: Sequence[float]) -> None:
    print("{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="="))
    rows = [
        ("Successful requests:", result["completed"], "d"),
        ("Failed requests:", result["failed"], "d"),
        ("Benchmark duration (s):", result["duration"], ".2f"),
        ("Total input tokens:", result["total_input_tokens"], "d"),
        ("Total generated tokens:", result["total_output_tokens"], "d"),
        ("Request throughput (req/s):", result["request_throughput"], ".2f"),
        ("Output token throughput (tok/s):", result["output_throughput"], ".2f"),
        ("Total Token throughput (tok/s):", result["total_token_throughput"], ".2f"),
    ]
    for label, value, spec in rows:
        print(f"{label:<40} {value:<10{spec}}")
    for name in printed:
        print("{s:{c}^{n}}".format(s=METRICS[name], n=50, c="-"))
        short = name.upper()
        print(f"{'Mean ' + short + ' (ms):':<40} {result[f'mean_{name}_ms']:<10.2f}")
        print(f"{'Median ' + short + ' (ms):':<40} {result[f'median_{name}_ms']:<10.2f}")
        for p in percentiles:
            print(f"{f'P{_label(p)} {short} (ms):':<40} {result[f'p{_label(p)}_{name}_ms']:<10.2f}")
    speculation = result.get("speculation")
    if isinstance(speculation, dict) and speculation:
        print("{s:{c}^{n}}".format(s="Speculative Decoding (server)", n=50, c="-"))
        for key, value in speculation.items():
            if not isinstance(value, list):
                print(f"{key + ':':<40} {value if value is None else round(value, 4)!s:<10}")
    print("=" * 50)
