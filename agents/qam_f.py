"""QAM-F (arXiv 2601.14234; docs/algorithms.md section 5): QAM acting with a one-step policy distilled from the
fine-tuned flow. The agent is agents/qam.py's; this file is its config, for `--agent=agents/qam_f.py`."""

from agents.qam import get_config as qam_config


def get_config():
    config = qam_config()
    config.fql_alpha = 10.0  # Distillation weight of the one-step policy.
    return config
