"""QAM-E (arXiv 2601.14234; docs/algorithms.md section 5): QAM whose flow actions are refined by a tanh-Gaussian
edit policy. The agent is agents/qam.py's; this file is its config, for `--agent=agents/qam_e.py`."""

from agents.qam import get_config as qam_config


def get_config():
    config = qam_config()
    config.edit_scale = 0.1  # a = clip(a_flow + edit_scale * e); per domain under a protocol (section 8).
    return config
