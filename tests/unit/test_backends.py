"""Choosing a backend: what `--engine auto` picks, and clear errors for what cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgespec.config import ModelConfig
from edgespec.engine import backends
from edgespec.engine.fetch import ModelFetchError
from edgespec.engine.loading import ModelLoadError


@pytest.fixture
def llamacpp(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setattr(backends, "llamacpp_installed", lambda: request.param)


@pytest.mark.parametrize(
    ("llamacpp", "name", "device", "chosen"),
    [
        (True, "demo-target", None, "llamacpp"),  # an alias is a GGUF
        (True, "/models/m.gguf", "cpu", "llamacpp"),
        (True, "/models/hf-folder", None, "torch"),  # llama.cpp runs GGUF files only
        (False, "demo-target", None, "torch"),  # not installed: torch runs the GGUF
    ],
    indirect=["llamacpp"],
)
def test_auto_picks_llamacpp_for_gguf_on_a_cpu_when_installed(
    llamacpp: None, name: str, device: str | None, chosen: str
) -> None:
    assert backends.choose_backend(ModelConfig(name, device=device)) == chosen


@pytest.mark.parametrize("llamacpp", [False], indirect=True)
def test_asking_for_llamacpp_without_it_says_how_to_install_it(llamacpp: None) -> None:
    with pytest.raises(ModelLoadError, match=r"pip install 'edgespec\[llamacpp\]'"):
        backends.choose_backend(ModelConfig("demo-target", engine="llamacpp"))


@pytest.mark.parametrize("llamacpp", [True], indirect=True)
def test_llamacpp_refuses_a_folder_with_a_clear_error(llamacpp: None, tmp_path: Path) -> None:
    with pytest.raises(ModelFetchError, match=r"runs \.gguf files"):
        backends.open_model(ModelConfig(str(tmp_path), engine="llamacpp"))


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="engine must be one of"):
        ModelConfig("m", engine="vllm")
