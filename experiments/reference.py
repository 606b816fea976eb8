"""The QAM paper's released per-seed learning curves (experiments/reference_results/qam_paper_curves.csv.gz), read
for experiments/aggregate.py and written by experiments/convert_qam_curves.py; the file's layout is documented in
experiments/reference_results/README.md.

    curves = load_curves(path)                     # one row per (name, method, step, seed), success in [0, 1]
    summary = published_summary(curves)            # (phase, method, domain) -> mean, std (%) at the phase ends
    whole_percent(summary['mean'].iloc[0])         # as the paper's tables print it
    matrix = phase_end_matrix(curves, 'online_end', 'QAM', envs)   # seeds x tasks success (%) at that end
"""

import functools
import os
from typing import Sequence

import numpy as np
import pandas as pd

CURVES_FILE = 'qam_paper_curves.csv.gz'
CURVE_COLUMNS = ('name', 'method', 'phase', 'step', 'seed', 'success')  # name: a task, a domain or ALL
ALL = 'all'  # the release's average over its ten domains
INTERVAL = 50_000  # steps between two evaluations of the release
PHASE_STEPS = {'offline': 1_000_000, 'online': 500_000}  # a run of the release; RLPD's has only the online one
# The step names of experiments/aggregate.py -> the phase whose last evaluation they are, and the published
# summary's phase label.
PHASE_ENDS = {'offline_end': 'offline', 'online_end': 'online'}
SUMMARY_PHASES = {'offline': 'offline_1M', 'online': 'online_end_1.5M'}


def load_curves(path: str) -> pd.DataFrame:
    """The curves file, checked for its columns and phases (a clear error names what is wrong)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path} missing: convert the release with experiments/convert_qam_curves.py.')
    curves = _read(os.path.abspath(path), os.path.getmtime(path)).copy()
    if tuple(curves.columns) != CURVE_COLUMNS:
        raise ValueError(f'{path} has columns {list(curves.columns)}, not {list(CURVE_COLUMNS)}.')
    phases = set(curves.phase) - set(PHASE_STEPS)
    if phases:
        raise ValueError(f'{path} has unknown phases {sorted(phases)}; known: {", ".join(PHASE_STEPS)}.')
    return curves


@functools.lru_cache(maxsize=2)
def _read(path: str, mtime: float) -> pd.DataFrame:
    """The file's frame, read once per modification (the release is a few hundred thousand rows)."""
    return pd.read_csv(path)


def phase_end(curves: pd.DataFrame, step_name: str) -> pd.DataFrame:
    """Each (name, method)'s evaluations at the last step of phase PHASE_ENDS[step_name] (none for a method
    without that phase)."""
    rows = curves[curves.phase == PHASE_ENDS[step_name]]
    last = rows.groupby(['name', 'method']).step.transform('max')
    return rows[rows.step == last]


def published_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per phase end, method and domain (or ALL): the mean and sample std (ddof 1) over the seeds of the
    success in %, indexed by (phase, method, domain) with SUMMARY_PHASES' phase labels. Tasks are left out."""
    frames = []
    for step_name, phase in PHASE_ENDS.items():
        rows = phase_end(curves, step_name)
        rows = rows[~rows.name.str.contains('-singletask-')]
        stats = (100.0 * rows.success).groupby([rows.method, rows.name]).agg(['mean', lambda v: v.std(ddof=1)])
        stats.columns = ['mean', 'std']
        frames.append(stats.rename_axis(['method', 'domain']).assign(phase=SUMMARY_PHASES[phase]))
    return pd.concat(frames).reset_index().set_index(['phase', 'method', 'domain'])


def whole_percent(value: float) -> int:
    """A published percentage as the QAM paper's tables print it: to a whole percent, halves up (a hair of float
    round-off below a half still counts as the half)."""
    return int(np.floor(value + 0.5 + 1e-9))


def phase_end_matrix(curves: pd.DataFrame, step_name: str, method: str, envs: Sequence[str]) -> np.ndarray:
    """Seeds x tasks success (%) of `method` on `envs` at a phase end (the release's own seeds; zero rows where the
    release has no such phase or task)."""
    rows = phase_end(curves, step_name)
    rows = rows[(rows.method == method) & rows.name.isin(envs)]
    table = rows.pivot(index='seed', columns='name', values='success')
    if set(table.columns) != set(envs):
        return np.zeros((0, len(envs)))
    return 100.0 * table.reindex(columns=list(envs)).dropna().to_numpy()
