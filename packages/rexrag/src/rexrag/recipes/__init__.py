"""Recipes: sft (warm-up), train (GRPO / REX-RAG), evaluate (greedy multi-turn EM)."""
