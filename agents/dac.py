"""DAC (diffusion actor-critic; docs/algorithms.md section 13): agents/qsm.py's DDPM policy trained with DAC's
gradient term instead of Q-score matching. This file is its config, for `--agent=agents/dac.py`."""

from agents.qsm import get_config as qsm_config


def get_config():
    config = qsm_config()
    config.loss = 'dac'  # minimise mean_dims[sqrt(1 - alphabar_t) grad_a Qbar * eps(s, x_t, t)]
    config.alpha = 1.0  # DDPM (BC) loss weight; per domain under a protocol (section 13)
    config.clip_denoised = True  # clip x0_hat at each sampler step ...
    config.clip_steps = False  # ... instead of the intermediate chunks
    return config
