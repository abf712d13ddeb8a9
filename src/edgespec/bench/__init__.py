"""Benchmarks that print figures: protocol overhead, the model pair across draft lengths."""
