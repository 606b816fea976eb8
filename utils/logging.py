"""Run directory logs: CSV files (resumable), optional wandb, and the learning-curve PNG."""

import csv
import json
import os
from typing import Dict, Optional

import numpy as np


class CsvLogger:
    """Appends one row per call; the header grows when new keys appear (the file is rewritten then)."""

    def __init__(self, path: str):
        self.path = path
        self.rows = []
        if os.path.exists(path):
            with open(path, newline='') as f:
                self.rows = [dict(row) for row in csv.DictReader(f)]
        self.columns = list(self.rows[0].keys()) if self.rows else []

    def truncate_after(self, step: int):
        """Drops rows logged after `step` (a resumed run logs them again)."""
        self.rows = [row for row in self.rows if _step_of(row) is not None and _step_of(row) <= step]
        self._rewrite()

    def log(self, row: Dict[str, float], step: int):
        row = {'step': step, **{key: _scalar(value) for key, value in row.items()}}
        self.rows.append(row)
        new_columns = [key for key in row if key not in self.columns]
        if new_columns:
            self.columns += new_columns
            self._rewrite()
        else:
            with open(self.path, 'a', newline='') as f:
                csv.DictWriter(f, fieldnames=self.columns).writerow(row)

    def _rewrite(self):
        temporary = self.path + '.tmp'
        with open(temporary, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(temporary, self.path)


def _step_of(row):
    """The row's step, or None for a row cut short by a killed process."""
    try:
        return int(float(row.get('step') or ''))
    except ValueError:
        return None


def _scalar(value):
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.tolist()


def read_csv(path: str):
    """Rows of a logged CSV as dicts of floats (empty cells are NaN)."""
    with open(path, newline='') as f:
        return [{key: float(value) if value not in ('', None) else float('nan') for key, value in row.items()}
                for row in csv.DictReader(f)]


class WandbLogger:
    """wandb in the mode asked for; `disabled` (the default) needs no account and no network."""

    def __init__(self, mode: str, project: str, group: str, name: str, config: dict, run_dir: str):
        self.run = None
        if mode == 'disabled':
            return
        import wandb

        run_id_path = os.path.join(run_dir, 'wandb_id.txt')
        run_id = open(run_id_path).read().strip() if os.path.exists(run_id_path) else wandb.util.generate_id()
        with open(run_id_path, 'w') as f:
            f.write(run_id)
        self.run = wandb.init(project=project, group=group, name=name, config=config, dir=run_dir,
                              mode=mode, id=run_id, resume='allow')

    def log(self, row: Dict[str, float], step: int):
        if self.run is not None:
            self.run.log({key: _scalar(value) for key, value in row.items()}, step=step)

    def finish(self):
        if self.run is not None:
            self.run.finish()


def write_json(path: str, payload):
    with open(path, 'w') as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)


def plot_learning_curve(run_dir: str, offline_steps: Optional[int] = None) -> Optional[str]:
    """Success (and return) against steps from eval.csv, with the offline/online boundary marked."""
    eval_path = os.path.join(run_dir, 'eval.csv')
    if not os.path.exists(eval_path):
        return None
    rows = read_csv(eval_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    steps = [row['step'] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for axis, key, label in ((axes[0], 'evaluation/success', 'success rate'),
                             (axes[1], 'evaluation/episode_return', 'episode return')):
        axis.plot(steps, [row.get(key, np.nan) for row in rows], marker='o')
        if offline_steps:
            axis.axvline(offline_steps, color='grey', linestyle='--', linewidth=1, label='online starts')
            axis.legend(loc='best')
        axis.set_xlabel('step')
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    path = os.path.join(run_dir, 'learning_curve.png')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
