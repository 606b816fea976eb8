"""The QAM paper's released curves in experiments/reference_results: their layout, their agreement with the
per-domain numbers published before them, and the conversion script on a hand-made release."""

import os

import numpy as np
import pandas as pd
import pytest

from experiments import convert_qam_curves, reference
from protocols.methods import paper_methods
from protocols.domains import DOMAINS

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments',
                             'reference_results')
ONLINE_ONLY = {'RLPD'}


@pytest.fixture(scope='module')
def curves():
    return reference.load_curves(os.path.join(REFERENCE_DIR, reference.CURVES_FILE))


def test_curves_layout(curves):
    assert tuple(curves.columns) == reference.CURVE_COLUMNS
    assert set(curves.method) == set(convert_qam_curves.METHOD_LABELS.values()) and curves.method.nunique() == 17
    assert set(curves.name) == set(convert_qam_curves.release_names()) and curves.name.nunique() == 61
    assert set(curves.seed) == set(range(12)) and curves.success.between(0, 1).all()
    steps = curves.groupby(['method', 'phase']).step.agg(['min', 'max', 'nunique'])
    for (method, phase), (first, last, count) in steps.iterrows():
        expected = {'offline': (50_000, 1_000_000, 20), 'online': (1_050_000, 1_500_000, 10)}[phase]
        if method in ONLINE_ONLY:  # no offline phase: its online steps count from 0
            expected = (50_000, 500_000, 10)
        assert (phase, first, last, count) == (phase, *expected), method
    assert set(steps.loc['RLPD'].index) == {'online'}
    # Every (name, method) has every evaluation of every seed once.
    sizes = curves.groupby(['name', 'method']).size()
    assert set(sizes) == {30 * 12, 10 * 12} and len(sizes) == 61 * 17


def test_curves_give_the_published_per_domain_numbers(curves):
    # The per-domain table the repository published before the curves (rounded to whole percents from the same
    # release): every row, offline end and online end, is the curves' mean and std rounded as the paper prints them.
    before = pd.read_csv(os.path.join(os.path.dirname(__file__), 'data', 'qam_paper_success.csv'))
    summary = reference.published_summary(curves)
    derived = summary.loc[list(zip(before.phase, before.method, before.domain))]
    assert len(before) == 2 * 7 * (len(DOMAINS) + 1)
    assert np.abs(derived['mean'].to_numpy() - before.success_mean_pct.to_numpy()).max() <= 0.5 + 1e-9
    assert [reference.whole_percent(value) for value in derived['mean']] == before.success_mean_pct.tolist()
    assert [reference.whole_percent(value) for value in derived['std']] == before.success_std_pct.tolist()
    assert [reference.whole_percent(value) for value in (6.5, 78.5 - 1e-12, 0.49, 100.0)] == [7, 79, 0, 100]
    # Every method at the online end, every one with an offline phase at the offline end.
    assert summary.groupby(level='phase').size().to_dict() == {'offline_1M': 16 * 11, 'online_end_1.5M': 17 * 11}


def test_conversion_of_a_hand_made_release(tmp_path):
    task = 'scene-play-singletask-task2-v0'
    release = {(task, 'QAM'): np.arange(30 * 12).reshape(30, 12) / 500,
               ('all', 'RLPD'): np.full((10, 12), 0.25)}
    curves = convert_qam_curves.convert(release)
    qam = curves[curves.method == 'QAM']
    assert len(qam) == 360 and tuple(qam.iloc[13]) == (task, 'QAM', 'offline', 100_000, 1, pytest.approx(13 / 500))
    assert qam[qam.step == 1_000_000].phase.unique().tolist() == ['offline']
    assert qam[qam.step == 1_050_000].phase.unique().tolist() == ['online']
    rlpd = curves[curves.method == 'RLPD']
    assert set(rlpd.phase) == {'online'} and (rlpd.step.min(), rlpd.step.max()) == (50_000, 500_000)
    # The ends the aggregation reads: the last offline and the last online evaluation of each seed.
    matrix = reference.phase_end_matrix(curves, 'offline_end', 'QAM', [task])
    assert matrix[:, 0] == pytest.approx(np.arange(19 * 12, 20 * 12) / 5)
    assert reference.phase_end_matrix(curves, 'offline_end', 'RLPD', ['all']).shape == (0, 1)
    path = tmp_path / 'curves.csv.gz'
    curves.to_csv(path, index=False)
    assert reference.load_curves(str(path)).equals(curves)
    for bad, message in (({('scene', 'QAM'): np.zeros((30, 12))}, 'unexpected key'),
                         ({(task, 'SAC'): np.zeros((30, 12))}, 'unexpected key'),
                         ({(task, 'QAM'): np.zeros((29, 12))}, 'neither both phases'),
                         ({(task, 'QAM'): np.full((30, 12), 2.0)}, r'rates in \[0, 1\]'),
                         ({(task, 'QAM'): np.full((30, 12), 1 / 3)}, 'not exact')):
        with pytest.raises(ValueError, match=message):
            convert_qam_curves.convert(bad)
    with pytest.raises(FileNotFoundError, match='convert_qam_curves.py'):
        reference.load_curves(str(tmp_path / 'absent.csv.gz'))


def test_the_qam_sweep_runs_every_method_of_the_released_curves(curves):
    assert set(paper_methods('qam')) == set(curves.method)
