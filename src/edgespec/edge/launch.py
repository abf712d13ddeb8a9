"""Building an edge runtime: load the draft, connect to the cloud, check the pair fits."""

from __future__ import annotations

from edgespec.config import EdgePolicy, LinkConfig, ModelConfig
from edgespec.edge.runtime import EdgeRuntime
from edgespec.engine.backends import open_model
from edgespec.metrics.observer import RuntimeObserver
from edgespec.transport.resilient import LinkEvents, ResilientLink


async def start_edge(
    model: ModelConfig,
    link: LinkConfig | None,
    policy: EdgePolicy = EdgePolicy(),
    *,
    require_cloud: bool = True,
    observer: RuntimeObserver | None = None,
    link_events: LinkEvents | None = None,
) -> EdgeRuntime:
    """The draft loaded and, unless `link` is None (edge mode only), the cloud link up. With
    `require_cloud` False an unreachable cloud is not an error: the link keeps retrying."""
    engine, tokenizer = open_model(model)
    links = None
    if link is not None:
        links = ResilientLink(link, tokenizer.identity, link_events, keepalive_s=link.keepalive_s)
        await links.start(require=require_cloud)
    return EdgeRuntime(engine, tokenizer, links, policy, observer)
