"""Agent registry: `agent_name` in a config -> agent class. main.py never branches on a name."""

import importlib

_AGENT_CLASSES = {
    'bc_flow': ('agents.bc_flow', 'BCFlowAgent'),
    'fql': ('agents.fql', 'FQLAgent'),
    'qam': ('agents.qam', 'QAMAgent'),
    'trqam': ('agents.trqam', 'TRQAMAgent'),
    'ifql': ('agents.ifql', 'IFQLAgent'),
    'dsrl': ('agents.dsrl', 'DSRLAgent'),
    'cgql': ('agents.cgql', 'CGQLAgent'),
}


def agent_names():
    return sorted(_AGENT_CLASSES)


def get_agent_class(agent_name: str):
    if agent_name not in _AGENT_CLASSES:
        raise ValueError(
            f'Unknown agent_name {agent_name!r}. Known agents: {", ".join(agent_names())}. '
            'Pass one of the files in agents/, e.g. --agent=agents/trqam.py.'
        )
    module_name, class_name = _AGENT_CLASSES[agent_name]
    return getattr(importlib.import_module(module_name), class_name)
