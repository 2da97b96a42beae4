"""Shared core for LLM reinforcement learning with tools: configs, tracking, models, retrieval, rollouts, rewards, objectives, trainer."""

__version__ = "0.1.0"
