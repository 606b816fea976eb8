"""Converts the QAM authors' released evaluation data to experiments/reference_results/qam_paper_curves.csv.gz.

    python experiments/convert_qam_curves.py --pkl=PATH/qam-exp-data.pkl

The release (`exp_data/qam-exp-data.pkl` of github.com/ColinQiyangLi/qam, MIT licence) is a pickled dict keyed by
(task, domain or 'all'; method) holding the success rate every 50K steps (rows) of 12 seeds (columns): 30 rows for
1M offline + 500K online steps, 10 for RLPD's online-only runs. It holds numpy arrays only, so pickle and numpy read
it. The output has one row per (name, method, step, seed) in the columns of `reference.CURVE_COLUMNS`; the step is
counted as main.py counts a run's (offline steps first). Layout: experiments/reference_results/README.md.
"""

import os
import pickle
import sys

import numpy as np
import pandas as pd
from absl import app, flags

if __package__ in (None, ''):  # `python experiments/convert_qam_curves.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import reference  # noqa: E402
from protocols.domains import DOMAINS  # noqa: E402

# The release's method names -> the labels of protocols.methods.METHODS (the one place they are matched).
METHOD_LABELS = {name: name for name in (
    'QAM', 'QAM-E', 'QAM-F', 'FQL', 'IFQL', 'DSRL', 'CGQL', 'CGQL-M', 'CGQL-L',
    'BAM', 'FBRAC', 'FAWAC', 'FEdit', 'QSM', 'DAC', 'ReBRAC', 'RLPD')}
TASKS_PER_DOMAIN = 5
DECIMALS = 6  # the released rates are averages of whole episodes over at most 50 tasks: exact at this precision


def release_names():
    """The names the release's first key may take: the 50 tasks, the ten domains and 'all'."""
    tasks = [f'{domain}-singletask-task{task}-v0' for domain in DOMAINS for task in range(1, TASKS_PER_DOMAIN + 1)]
    return tasks + list(DOMAINS) + [reference.ALL]


def phases_of(rows: int):
    """(phase, step) of each row of an array of `rows` evaluations, one every reference.INTERVAL steps: both
    phases (offline first, its steps counted before the online ones, as main.py counts), or the online one alone."""
    offline, online = (steps // reference.INTERVAL for steps in reference.PHASE_STEPS.values())
    if rows not in (offline + online, online):
        raise ValueError(f'an array of {rows} evaluations is neither both phases ({offline + online}) nor the online '
                         f'one alone ({online})')
    first_online = rows - online
    return [('offline' if index < first_online else 'online', (index + 1) * reference.INTERVAL)
            for index in range(rows)]


def convert(release: dict) -> pd.DataFrame:
    """The release as a frame of reference.CURVE_COLUMNS; a key or an array it does not expect raises ValueError."""
    names, frames = set(release_names()), []
    for key, values in release.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] in names and key[1] in METHOD_LABELS):
            raise ValueError(f'unexpected key {key!r}: (task, domain or "all"; one of {", ".join(METHOD_LABELS)})')
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f'{key!r}: expected a (evaluations, seeds) array of rates in [0, 1]')
        steps = phases_of(len(values))
        frames.append(pd.DataFrame({
            'name': key[0], 'method': METHOD_LABELS[key[1]],
            'phase': np.repeat([phase for phase, _ in steps], values.shape[1]),
            'step': np.repeat([step for _, step in steps], values.shape[1]),
            'seed': np.tile(np.arange(values.shape[1]), len(steps)), 'success': values.ravel().round(DECIMALS)}))
        if np.abs(values.ravel() - frames[-1].success).max() > 1e-12:
            raise ValueError(f'{key!r}: rates not exact at {DECIMALS} decimals')
    order = {name: index for index, name in enumerate(release_names())}
    curves = pd.concat(frames, ignore_index=True)[list(reference.CURVE_COLUMNS)]
    return curves.sort_values(['name', 'method', 'step', 'seed'], key=lambda column: column.map(order)
                              if column.name == 'name' else column, ignore_index=True)


def main(_):
    with open(flags.FLAGS.pkl, 'rb') as f:
        release = pickle.load(f)
    curves = convert(release)
    out = flags.FLAGS.out
    curves.to_csv(out, index=False, compression={'method': 'gzip', 'mtime': 0})  # mtime 0: the same bytes each time
    print(f'{len(release)} curves, {len(curves)} rows, {curves.method.nunique()} methods -> {out} '
          f'({os.path.getsize(out) / 1e6:.2f} MB)')


if __name__ == '__main__':
    flags.DEFINE_string('pkl', None, 'The release\'s qam-exp-data.pkl.', required=True)
    flags.DEFINE_string('out', os.path.join('experiments', 'reference_results', reference.CURVES_FILE),
                        'The curves file written (gzipped CSV).')
    app.run(main)
