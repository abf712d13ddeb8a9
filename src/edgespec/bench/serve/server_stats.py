"""The server's speculation statistics over the run: its Prometheus counters before and after.
Reads edgespec's names, and vLLM's (`vllm:spec_decode_*`) so the same run works against vLLM."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
PREFIXES = ("edgespec:", "vllm:")


async def scrape(client: httpx.AsyncClient, url: str) -> Samples | None:
    """Every sample of the /metrics page, or None when the server has none."""
    try:
        response = await client.get(url, timeout=10)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def speculation(before: Samples | None, after: Samples | None, output_tokens: int) -> dict[str, object]:
    if before is None or after is None:
        return {}
    prefix = next((p for p in PREFIXES if any(name.startswith(p) for name, _ in after)), PREFIXES[0])

    def moved(name: str, **labels: str) -> float:
        key = (prefix + name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    drafts, drafted = moved("spec_decode_num_drafts_total"), moved("spec_decode_num_draft_tokens_total")
    accepted = moved("spec_decode_num_accepted_tokens_total")
    positions = sorted(
        {dict(labels).get("position", "") for name, labels in after if name.endswith("accepted_tokens_per_pos_total")},
        key=lambda p: int(p) if p.isdigit() else 0,
    )
    per_position = [moved("spec_decode_num_accepted_tokens_per_pos_total", position=p) for p in positions]
    rtt_count = moved("link_rtt_seconds_count")
    bytes_moved = moved("link_bytes_sent_total") + moved("link_bytes_received_total")
    return {
        "num_drafts": drafts,
        "num_draft_tokens": drafted,
        "num_accepted_tokens": accepted,
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_acceptance_length": 1 + accepted / drafts if drafts else None,
        "acceptance_per_position": [count / drafts for count in per_position] if drafts else [],
        "mean_rtt_ms": 1000 * moved("link_rtt_seconds_sum") / rtt_count if rtt_count else None,
        "bytes_per_output_token": bytes_moved / output_tokens if output_tokens and bytes_moved else None,
        "cloud_forwards_per_output_token": (
            moved("cloud_forward_passes_total") / output_tokens if output_tokens and prefix == "edgespec:" else None
        ),
    }
