"""Evaluation throughput benchmark and the small OpenAI-compatible server it (and tests) use."""
