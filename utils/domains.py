"""Per-domain protocol settings of the papers (ALGORITHMS.md sections 1, 7 and 8)."""

LOCOMOTION_PREFIXES = ('antmaze', 'humanoidmaze', 'pointmaze')


def is_locomotion(env_name: str) -> bool:
    return env_name.startswith(LOCOMOTION_PREFIXES)


def default_horizon_length(env_name: str) -> int:
    """Chunk length H: 5 for the manipulation domains (cube, scene, puzzle), 1 for the mazes."""
    return 1 if is_locomotion(env_name) else 5
