"""Exact tabular theory of Conservative Q-Learning (numpy and scipy only)."""
