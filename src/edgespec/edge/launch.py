"""Building an edge runtime: load the draft, connect to the cloud, check the pair fits."""

from __future__ import annotations

from edgespec.config import EdgePolicy, LinkConfig, ModelConfig
from edgespec.edge.runtime import EdgeRuntime
from edgespec.engine.backends import open_model
from edgespec.metrics.observer import RuntimeObserver
from edgespec.protocol.messages import TokenizerId
from edgespec.transport.pool import CloudPool, PoolEvents, no_pool_events
from edgespec.transport.resilient import CloudLinks, ResilientLink


async def start_edge(
    model: ModelConfig,
    link: LinkConfig | list[LinkConfig] | None,
    policy: EdgePolicy = EdgePolicy(),
    *,
    require_cloud: bool = True,
    observer: RuntimeObserver | None = None,
    link_events: PoolEvents | None = None,
) -> EdgeRuntime:
    """The draft loaded and, unless `link` is None (edge mode only), the link to the cloud (or,
    given several, to each cloud) up. With `require_cloud` False an unreachable cloud is not an
    error: the link keeps retrying."""
    engine, tokenizer = open_model(model)
    links = None
    if link is not None:
        links = clouds(link if isinstance(link, list) else [link], tokenizer.identity, link_events)
        await links.start(require=require_cloud)
    return EdgeRuntime(engine, tokenizer, links, policy, observer)


def clouds(configs: list[LinkConfig], tokenizer: TokenizerId, events: PoolEvents | None) -> CloudLinks:
    """One self-healing link, or a pool placing sessions over several clouds."""
    if len(configs) == 1:
        return ResilientLink(configs[0], tokenizer, events, keepalive_s=configs[0].keepalive_s)
    return CloudPool(configs, tokenizer, events or no_pool_events(), keepalive_s=configs[0].keepalive_s)
