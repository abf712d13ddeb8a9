"""`edgespec bench serve` against a real edge and cloud: vLLM's result fields, per-token
inter-token latency, the server's speculation statistics; and the request shapes vLLM's own
benchmark client sends, parsed the way it parses them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgespec.cli import main
from tests.conftest import TinyPair
from tests.integration.api_fixtures import edge_url

VLLM_FIELDS = {
    "date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness", "max_concurrency",
    "duration", "completed", "total_input_tokens", "total_output_tokens", "request_throughput", "output_throughput",
    "total_token_throughput", "input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors",
    "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "std_tpot_ms",
    "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "std_itl_ms", "p99_itl_ms", "mean_e2el_ms", "median_e2el_ms",
    "std_e2el_ms", "p99_e2el_ms",
}  # fmt: skip


@pytest.fixture(scope="module")
def base(tiny_pair: TinyPair, tiny_cloud: int) -> Iterator[str]:
    with edge_url(tiny_pair.draft, tiny_cloud) as url:
        yield url.removesuffix("/v1")


def bench(base: str, tiny_pair: TinyPair, out: Path, *extra: str) -> dict:
    args = ["bench", "serve", "--base-url", base, "--model", "tiny", "--tokenizer", str(tiny_pair.target)]
    main([*args, "--save-result", "--result-dir", str(out), "--result-filename", "r.json", *extra])
    return json.loads((out / "r.json").read_text())


def test_random_dataset_run_has_vllms_fields_and_per_token_itl(
    base: str, tiny_pair: TinyPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = bench(
        base, tiny_pair, tmp_path,
        "--random-input-len", "16", "--random-output-len", "12", "--num-prompts", "6", "--ignore-eos",
        "--max-concurrency", "3", "--save-detailed", "--metadata", "link=loopback", "--metric-percentiles", "50,99",
    )  # fmt: skip
    assert set(result) >= VLLM_FIELDS and result["link"] == "loopback"
    assert result["completed"] == 6 and result["failed"] == 0 and result["total_output_tokens"] == 72
    assert all(len(itl) == 12 - 1 for itl in result["itls"])  # one gap per token after the first
    assert result["p50_ttft_ms"] <= result["p99_ttft_ms"]
    speculation = result["speculation"]
    assert speculation["num_drafts"] > 0 and 0 <= speculation["acceptance_rate"] <= 1
    assert speculation["cloud_forwards_per_output_token"] < 1 and speculation["mean_rtt_ms"] is not None
    assert len(speculation["acceptance_per_position"]) == 4  # the edge's default k
    printed = capsys.readouterr().out
    assert "Serving Benchmark Result" in printed and "Mean ITL (ms):" in printed


def test_sharegpt_file_and_chat_backend(base: str, tiny_pair: TinyPair, tmp_path: Path) -> None:
    conversations = [
        {
            "conversations": [
                {"from": "human", "value": f"Explain hash maps, part {i}."},
                {"from": "gpt", "value": "x " * 9},
            ]
        }
        for i in range(5)
    ]
    dataset = tmp_path / "sharegpt.json"
    dataset.write_text(json.dumps(conversations))
    result = bench(
        base, tiny_pair, tmp_path,
        "--backend", "openai-chat", "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--num-prompts", "3",
        "--request-rate", "20", "--ignore-eos",
    )  # fmt: skip
    assert result["completed"] == 3 and result["failed"] == 0 and "itls" not in result  # not --save-detailed


def test_vllm_benchmark_client_request_shapes(base: str) -> None:
    """What vLLM 0.9's benchmark client (backend vllm and openai-chat) sends, read as it reads it."""
    completions = {
        "model": "tiny",
        "prompt": "def quicksort(arr):",
        "temperature": 0.0,
        "repetition_penalty": 1.0,
        "max_tokens": 10,
        "logprobs": None,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        "temperature": 0.0,
        "max_completion_tokens": 10,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    for path, body, field in (("/v1/completions", completions, "text"), ("/v1/chat/completions", chat, "delta")):
        text, output_tokens = "", None
        with httpx.stream("POST", base + path, json=body, headers={"Authorization": "Bearer None"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                chunk = line.strip().removeprefix("data: ")
                if not chunk or chunk == "[DONE]":
                    continue
                data = json.loads(chunk)
                if choices := data.get("choices"):
                    text += choices[0]["text"] if field == "text" else choices[0]["delta"].get("content") or ""
                elif usage := data.get("usage"):
                    output_tokens = usage.get("completion_tokens")
        assert text and output_tokens == 10
