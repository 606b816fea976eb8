"""A toy agent for tests/test_registry.py: FQL under another name, in its own file as a new agent would be."""

from agents.fql import FQLAgent
from agents.fql import get_config as fql_config


class ToyAgent(FQLAgent):
    pass


def get_config():
    config = fql_config()
    config.agent_name = 'toy_agent'
    return config
