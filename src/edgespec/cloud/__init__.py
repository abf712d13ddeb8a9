"""The cloud: a server for many edges, many sessions each, and the target's verifier."""
