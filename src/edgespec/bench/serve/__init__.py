"""`edgespec bench serve`: a load generator for any OpenAI-compatible server, compatible with `vllm bench serve`."""
