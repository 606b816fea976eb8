"""Shared building blocks of the agents, main.py and the experiments."""
