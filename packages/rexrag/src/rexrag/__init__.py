"""REX-RAG: probe sampling with exploratory prompts and mixture-policy correction for search-agent RL."""

__version__ = "0.1.0"
