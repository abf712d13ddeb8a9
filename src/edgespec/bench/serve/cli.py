"""`edgespec bench serve`: the flags of `vllm bench serve` (benchmark_serving.py), its printed
summary, and a result JSON whose fields are a superset of vLLM's."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from pathlib import Path

from edgespec.bench.serve.client import RequestShape
from edgespec.bench.serve.dataset import SampleRequest, random_requests, sharegpt_requests
from edgespec.bench.serve.runner import Schedule, run
from edgespec.bench.serve.summary import METRICS, print_summary
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.loading import load_tokenizer

CHAT_BACKENDS = {"openai-chat"}
DETAILED = ("input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors")


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="vllm", choices=["vllm", "openai", "openai-chat"])
    parser.add_argument("--base-url", help="server base URL, e.g. http://127.0.0.1:8082 (instead of host/port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--endpoint", help="default: /v1/completions (/v1/chat/completions for openai-chat)")
    parser.add_argument("--model", required=True, help="the model name the server serves")
    parser.add_argument("--tokenizer", help="tokenizer folder, .gguf or alias (default: --model)")
    parser.add_argument("--api-key", help="sent as a Bearer token")
    parser.add_argument("--dataset-name", default="random", choices=["random", "sharegpt"])
    parser.add_argument("--dataset-path", help="the ShareGPT JSON file (sharegpt only; nothing is downloaded)")
    parser.add_argument("--random-input-len", type=int, default=1024)
    parser.add_argument("--random-output-len", type=int, default=128)
    parser.add_argument("--random-range-ratio", type=float, default=0.0)
    parser.add_argument("--sharegpt-output-len", type=int, help="override each conversation's output length")
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--request-rate", type=float, default=float("inf"), help="requests/s (inf: all at once)")
    parser.add_argument("--burstiness", type=float, default=1.0, help="1 is Poisson; <1 burstier, >1 steadier")
    parser.add_argument("--max-concurrency", type=int)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--ignore-eos", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--percentile-metrics", default="ttft,tpot,itl,e2el")
    parser.add_argument("--metric-percentiles", default="99")
    parser.add_argument("--save-result", action="store_true")
    parser.add_argument("--save-detailed", action="store_true", help="keep per-request lists in the JSON")
    parser.add_argument("--result-dir", default=".")
    parser.add_argument("--result-filename")
    parser.add_argument("--metadata", nargs="*", default=[], help="KEY=VALUE pairs recorded in the JSON")


def run_serve(args: argparse.Namespace) -> None:
    base = (args.base_url or f"http://{args.host}:{args.port}").rstrip("/")
    chat = args.backend in CHAT_BACKENDS
    endpoint = args.endpoint or ("/v1/chat/completions" if chat else "/v1/completions")
    printed, percentiles = _metric_choice(args)
    metadata = _metadata(args.metadata)
    if args.num_prompts < 1:
        raise ValueError(f"--num-prompts must be at least 1, got {args.num_prompts}")
    schedule = Schedule(args.request_rate, args.burstiness, args.max_concurrency, args.seed)
    samples = _samples(args)
    shape = RequestShape(base + endpoint, chat, args.model, args.temperature, args.top_p, args.ignore_eos, args.api_key)
    result = asyncio.run(run(shape, samples, schedule, base + "/metrics", percentiles))
    print_summary(result, printed, percentiles)
    header = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": args.backend,
        "model_id": args.model,
        "tokenizer_id": args.tokenizer or args.model,
        "num_prompts": args.num_prompts,
        "request_rate": args.request_rate if args.request_rate != float("inf") else "inf",
        "burstiness": args.burstiness,
        "max_concurrency": args.max_concurrency,
    }
    record = header | metadata | result
    if not args.save_detailed:
        for key in DETAILED:
            record.pop(key)
    if args.save_result:
        path = Path(args.result_dir) / (args.result_filename or _default_filename(header))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1))
        print(f"results saved to {path}")


def _samples(args: argparse.Namespace) -> list[SampleRequest]:
    tokenizer = load_tokenizer(resolve_model_path(args.tokenizer or args.model))
    if args.dataset_name == "sharegpt":
        if not args.dataset_path:
            raise ValueError("--dataset-name sharegpt needs --dataset-path (a local ShareGPT JSON file)")
        return sharegpt_requests(
            tokenizer, Path(args.dataset_path), args.num_prompts, args.sharegpt_output_len, args.seed
        )
    return random_requests(
        tokenizer, args.num_prompts, args.random_input_len, args.random_output_len, args.random_range_ratio, args.seed
    )


def _metric_choice(args: argparse.Namespace) -> tuple[list[str], list[float]]:
    printed = [name.strip() for name in args.percentile_metrics.split(",")]
    unknown = set(printed) - set(METRICS)
    if unknown:
        raise ValueError(
            f"--percentile-metrics: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}"
        )
    try:
        percentiles = [float(p) for p in args.metric_percentiles.split(",")]
    except ValueError:
        raise ValueError(f"--metric-percentiles must be numbers, got {args.metric_percentiles!r}") from None
    if not all(0 < p < 100 for p in percentiles):
        raise ValueError("--metric-percentiles must lie strictly between 0 and 100")
    return printed, percentiles


def _metadata(pairs: list[str]) -> dict[str, str]:
    if any("=" not in pair for pair in pairs):
        raise ValueError("--metadata takes KEY=VALUE pairs")
    return dict(pair.split("=", 1) for pair in pairs)


def _default_filename(header: dict[str, object]) -> str:
    concurrency = f"-concurrency{header['max_concurrency']}" if header["max_concurrency"] else ""
    model = str(header["model_id"]).rstrip("/").split("/")[-1]
    return f"{header['backend']}-{header['request_rate']}qps{concurrency}-{model}-{header['date']}.json"
