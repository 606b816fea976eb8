"""Shared building blocks of the agents, main.py and the experiments."""

from utils.prng import use_unrolled_threefry_on_cpu

use_unrolled_threefry_on_cpu()  # Same random numbers, fewer CPU loop iterations (see utils/prng.py).
