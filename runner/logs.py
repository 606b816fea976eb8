"""Run directory logs: one `RunLogger` fans every row out to the run's CSV files and to wandb; the
learning-curve PNG."""

import csv
import json
import os
import sys
import time
from typing import Dict, Optional

from runner.layout import EVAL_CSV, LEARNING_CURVE, SUCCESS_KEY, TRAIN_CSV

import numpy as np
import tqdm


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
    """Rows of a logged CSV: numbers as floats, empty cells NaN, other text (the `phase` column) kept."""

    def value(text):
        if text in ('', None):
            return float('nan')
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline='') as f:
        return [{key: value(text) for key, text in row.items()} for row in csv.DictReader(f)]


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

    def log_video(self, path: str, step: int):
        if self.run is not None:
            import wandb

            self.run.log({f'evaluation/video/{os.path.basename(path)}': wandb.Video(path, format='mp4')}, step=step)

    def finish(self):
        if self.run is not None:
            self.run.finish()


EVALUATION_PREFIX = 'evaluation/'


class RunLogger:
    """The logs of one run directory: `log(row, step)` writes the row to eval.csv (rows of `evaluation/...`
    keys) or train.csv (everything else) and to wandb.

    Opening trims both CSVs to `restored_step` (0 for a run that starts from scratch), so a restarted
    run logs every later step exactly once.
    """

    def __init__(self, run_dir: str, restored_step: int, wandb_settings: dict, name: str, config: dict):
        self.csv = {'train': CsvLogger(os.path.join(run_dir, TRAIN_CSV)),
                    'eval': CsvLogger(os.path.join(run_dir, EVAL_CSV))}
        for logger in self.csv.values():
            logger.truncate_after(restored_step)
        self.wandb = WandbLogger(**wandb_settings, name=name, config=config, run_dir=run_dir)

    def log(self, row: Dict[str, float], step: int):
        stream = 'eval' if any(key.startswith(EVALUATION_PREFIX) for key in row) else 'train'
        self.csv[stream].log(row, step)
        self.wandb.log(row, step)

    def log_video(self, path: str, step: int):
        """An evaluation video (written to `path` already) to wandb, when it is on."""
        self.wandb.log_video(path, step)

    def latest(self, key: str):
        """The last logged value of `key` (None if it was never logged)."""
        for logger in self.csv.values():
            for row in reversed(logger.rows):
                if row.get(key) not in (None, ''):
                    return float(row[key])
        return None

    def close(self):
        self.wandb.finish()


class Progress:
    """A run's progress on stderr: tqdm's bar on a terminal; in a file (a cluster job's log) one plain line at
    every `line_at(step)` step the run reports (its log steps and the ends of its phases), never a stream of
    carriage-return updates."""

    def __init__(self, name: str, total: int, initial: int, stream=None):
        self.stream = stream or sys.stderr
        self.name, self.total, self.step, self.success = name, total, initial, None
        self.reported = (initial, time.time())  # the step and time of the last line
        self.bar = (tqdm.tqdm(total=total, initial=initial, smoothing=0.1, dynamic_ncols=True, desc=name,
                              file=self.stream) if self.stream.isatty() else None)

    def update(self, steps: int, report: bool = False):
        """`steps` more done; with `report` (a log step or a phase's end), a line in a file."""
        self.step += steps
        if self.bar is not None:
            self.bar.update(steps)
        elif report:
            (step, seconds), now = self.reported, time.time()
            rate, self.reported = (self.step - step) / max(now - seconds, 1e-9), (self.step, now)
            success = '' if self.success is None else f', success {self.success:.2f}'
            print(f'{self.name}: step {self.step}/{self.total} ({100 * self.step / max(self.total, 1):.0f}%), '
                  f'{rate:.1f} steps/s{success}', file=self.stream, flush=True)

    def set_success(self, success: float):
        self.success = success
        if self.bar is not None:
            self.bar.set_postfix(success=f'{success:.2f}')

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Throughput:
    """Steps per second since the last `rate()` call."""

    def __init__(self):
        self.start, self.steps = time.time(), 0

    def add(self, steps: int):
        self.steps += steps

    def rate(self) -> float:
        rate = self.steps / max(time.time() - self.start, 1e-9)
        self.start, self.steps = time.time(), 0
        return rate


def write_json(path: str, payload):
    """Writes `payload` whole or not at all (a temporary file renamed into place)."""
    temporary = path + '.tmp'
    with open(temporary, 'w') as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    os.replace(temporary, path)


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def plot_learning_curve(run_dir: str, offline_steps: Optional[int] = None) -> Optional[str]:
    """Success (and return) against steps from eval.csv, with the offline/online boundary marked."""
    eval_path = os.path.join(run_dir, EVAL_CSV)
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
    for axis, key, label in ((axes[0], SUCCESS_KEY, 'success rate'),
                             (axes[1], 'evaluation/episode_return', 'episode return')):
        axis.plot(steps, [row.get(key, np.nan) for row in rows], marker='o')
        if offline_steps:
            axis.axvline(offline_steps, color='grey', linestyle='--', linewidth=1, label='online starts')
            axis.legend(loc='best')
        axis.set_xlabel('step')
        axis.set_ylabel(label)
        if key == SUCCESS_KEY:
            axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    path = os.path.join(run_dir, LEARNING_CURVE)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
