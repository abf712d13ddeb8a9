"""The edge: the draft model, the per-request speculative loop and its modes."""
