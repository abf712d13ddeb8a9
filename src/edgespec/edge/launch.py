"""Building an edge runtime: load the draft, connect to the cloud, check the pair fits."""

from __future__ import annotations

from edgespec.config import LinkConfig, Mode, ModelConfig, SpecConfig
from edgespec.edge.runtime import EdgeRuntime
from edgespec.engine.fetch import resolve_model_path
from edgespec.engine.loading import load_engine
from edgespec.engine.tokenizer import TokenizerInfo
from edgespec.transport.client import CloudLink


async def start_edge(
    model: ModelConfig, link: LinkConfig | None, spec: SpecConfig = SpecConfig(), mode: Mode = Mode.SPEC
) -> tuple[EdgeRuntime, TokenizerInfo]:
    """The draft loaded and, unless `link` is None (edge mode only), the cloud link up."""
    engine, tokenizer = load_engine(resolve_model_path(model.name), model)
    cloud = await CloudLink.connect(link, tokenizer.identity) if link is not None else None
    return EdgeRuntime(engine, tokenizer.eos_token_ids, cloud, spec, mode), tokenizer
