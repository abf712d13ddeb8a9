"""Bad flags and bad paths end with one clear line and exit code 2, never a traceback, and
before anything slow starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgespec.cli import EXIT_USAGE, _parser, main
from edgespec.cli.serving import draft_and_k, spec_config


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == EXIT_USAGE
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cloud", "--model", "m", "--port", "70000"], "port must be in"),
        (["cloud", "--model", "m", "--host", "0.0.0.0"], "without an auth token"),
        (["cloud", "--model", "m", "--max-k", "0"], "max_k must be at least 1"),
        (["cloud", "--model", "m", "--batch-window-ms", "-1"], "batch window must be in [0, 1000] ms"),
        (["generate", "--model", "m", "--prompt", "x", "--cloud", "nowhere"], "HOST:PORT"),
        (["generate", "--model", "m", "--prompt", "x", "--temperature", "-1", "--mode", "edge"], "temperature"),
        (["generate", "--model", "/no/such/model", "--prompt", "x", "--mode", "edge"], "does not exist"),
        (["demo", "--max-tokens", "0"], "--max-tokens must be at least 1"),
        (["demo", "-k", "99"], "num_speculative_tokens"),
        (["models", "fetch", "no-such-alias"], "unknown alias"),
        (["edge"], "a draft model is required"),
        (["edge", "--speculative-config", "{model"], "not valid JSON"),
        (["edge", "--speculative-config", "[1]"], "must be a JSON object"),
        (["edge", "--speculative-config", '{"model": "m", "temperature": 1}'], "unsupported keys: temperature"),
        (["edge", "--speculative-config", '{"model": "m", "num_speculative_tokens": "3"}'], "must be an integer"),
        (["edge", "--model", "m", "-k", "99"], "num_speculative_tokens"),
        (["edge", "--model", "m", "-k", "fast"], "must be an integer or 'auto'"),
        (["edge", "--model", "m", "--port", "70000"], "port must be in"),
        (["edge", "--model", "m", "--cloud", "127.0.0.1:1,127.0.0.1:1"], "given once"),
        (["edge", "--model", "m", "--cloud", "127.0.0.1:1,nowhere"], "HOST:PORT"),
        (["edge", "--model", "m", "--cloud-wait-timeout", "-1"], "cloud_wait_timeout_s"),
        (["edge", "--model", "/no/such/model", "--mode", "edge", "--port", "0"], "does not exist"),
    ],
)
def test_bad_input_gets_one_clear_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_cli(args, capsys)
    assert err.startswith("edgespec: error:") and message in err
    assert "Traceback" not in err


def test_convert_refuses_a_file_that_is_not_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"junk")
    assert "not a .gguf file" in run_cli(["models", "convert", str(not_gguf), str(tmp_path / "out")], capsys)


def test_convert_never_overwrites_a_folder_with_contents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    err = run_cli(["models", "convert", str(tmp_path / "m.gguf"), str(out)], capsys)
    assert "already exists" in err and (out / "precious.txt").read_text() == "keep me"


def test_vllm_style_speculative_config_names_thedraft_and_k() -> None:
    args = _parser().parse_args(
        ["edge", "--speculative-config", '{"model": "demo-draft", "num_speculative_tokens": 3, "remote_target": true}']
    )
    assert draft_and_k(args) == ("demo-draft", 3)
    explicit = _parser().parse_args(["edge", "--model", "mine", "-k", "5", "--speculative-config", '{"model": "x"}'])
    assert draft_and_k(explicit) == ("mine", 5)  # explicit flags win


def test_auto_draft_length_and_pipelining_flags() -> None:
    args = _parser().parse_args(["edge", "--model", "m", "-k", "auto", "--no-pipeline"])
    spec = spec_config(draft_and_k(args)[1], args.pipeline)
    assert spec.adaptive and not spec.pipeline
    args = _parser().parse_args(["edge", "--speculative-config", '{"model": "m", "num_speculative_tokens": "auto"}'])
    assert spec_config(draft_and_k(args)[1], args.pipeline).adaptive
    assert _parser().parse_args(["edge", "--model", "m"]).pipeline  # on by default
