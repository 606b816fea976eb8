"""experiments/stability.py: the report from run directories, and the whole experiment at a tiny size on a synthetic
dataset in robomimic's layout with real robosuite Lift environments (skipped without h5py / robosuite)."""

import json
import math
import os
from types import SimpleNamespace

import pytest

from experiments import stability
from runner.layout import write_divergence
from tests import robomimic_fixtures
from tests.conftest import write_csv

# tests/test_robomimic_main.py's offline settings: with a persistent compilation cache (.ci/run) the BC and TRQAM
# programs compiled there serve here too.
TINY_STEPS = ['--bc_steps=10', '--offline_steps=20', '--online_steps=0', '--log_interval=10', '--steps_per_call=10',
              '--eval_interval=0', '--eval_episodes=1']


def fake_run(run_dir, adj_losses, successes, offline_steps, diverged_at=None, with_lambda=False):
    """A run directory as main.py leaves it: training rows every 10 steps (with the text column 'phase'), an
    online episode row, evaluations every 20 steps; diverged.json when the seed stopped."""
    os.makedirs(run_dir)
    rows = []
    for index, loss in enumerate(adj_losses):
        step = 10 * (index + 1)
        row = {'step': step, 'training/actor/adj_loss': loss, 'training/actor/path_kl': loss / 10,
               'training/grad_norm': 2 * loss, 'phase': 'offline' if step <= offline_steps else 'online'}
        if with_lambda:
            row['training/dual/lambda'] = 3.0 - index
        rows.append(row)
    rows.append({'step': 35, 'online/episode_return': -15.0, 'online/episode_success': 0.0})
    write_csv(os.path.join(run_dir, 'train.csv'), sorted(rows, key=lambda row: row['step']))
    write_csv(os.path.join(run_dir, 'eval.csv'), [{'step': 20 * (index + 1), 'evaluation/success': success}
                                                   for index, success in enumerate(successes)])
    if diverged_at is not None:
        write_divergence(run_dir, diverged_at, 'training/actor/adj_loss', 'Training seed 1 diverged.')


def test_report_averages_the_seeds_that_reached_each_step(tmp_path):
    qam, trqam = stability.configurations([3.0], [0.5], clip_grad_norm=1.0)[1:]  # QAM without the clip, TRQAM
    assert qam.settings == {'inv_temp': 3.0, 'clip_grad_norm': 0.0}
    assert qam.run_name('lift-mh-low_dim') == 'qam_invtemp3_noclip_lift-mh-low_dim_seed{seed}'
    assert trqam.run_name('lift-mh-low_dim') == 'trqam_kl0.5_clip1_lift-mh-low_dim_seed{seed}'
    assert trqam.agent_config({'num_qs': 2}).kl_budget == 0.5 and qam.agent_config({}).clip_grad_norm == 0.0

    qam_dirs = {0: str(tmp_path / 'qam0'), 1: str(tmp_path / 'qam1')}
    fake_run(qam_dirs[0], [1.0, 10.0, 100.0, 1000.0], [0.5, 0.0], offline_steps=30)
    fake_run(qam_dirs[1], [3.0, 30.0], [0.7], offline_steps=30, diverged_at=25)
    trqam_dirs = {0: str(tmp_path / 'trqam0')}
    fake_run(trqam_dirs[0], [1.0, 0.9, 0.8, 0.7], [0.5, 0.6], offline_steps=30, with_lambda=True)

    args = SimpleNamespace(env_name='lift-mh-low_dim', protocol='trqam', seeds=['0', '1'], offline_steps=30,
                           online_steps=10, out_dir=str(tmp_path / 'report'), save_dir=str(tmp_path))
    report = stability.write_report(args, [(qam, qam_dirs), (trqam, trqam_dirs)])
    assert os.path.getsize(tmp_path / 'report' / 'stability.png') > 0
    assert json.load(open(tmp_path / 'report' / 'stability.json')) == report

    assert report['seeds'] == [0, 1]  # as main.py's --seeds, the flag gives text
    qam_entry, trqam_entry = report['configurations']
    assert qam_entry['steps'] == [10, 20, 30, 40]  # the online episode row at step 35 is no training row
    assert qam_entry['adj_loss'] == [2.0, 20.0, 100.0, 1000.0]  # seed 1 stopped after step 20
    assert qam_entry['path_kl'][0] == pytest.approx(0.2)
    assert qam_entry['eval_steps'] == [20, 40] and qam_entry['success'] == [pytest.approx(0.6), 0.0]
    assert qam_entry['diverged_at'] == {'1': 25} and 'lambda' not in qam_entry
    assert qam_entry['summary'] == {'adj_loss_first': 2.0, 'adj_loss_max': 1000.0, 'adj_loss_last': 1000.0,
                                    'success_max': pytest.approx(0.6), 'success_last': 0.0}
    assert qam_entry['per_seed']['1']['adj_loss'] == [3.0, 30.0]
    assert trqam_entry['lambda'] == [3.0, 2.0, 1.0, 0.0] and trqam_entry['kl_budget'] == 0.5


def test_each_configuration_runs_its_own_settings_and_diverged_seeds_are_not_restarted(tmp_path, monkeypatch):
    assert stability.parse_flags(['stability.py', '--tiny', f'--save_dir={tmp_path}', '--temperatures=3',
                                  '--budgets=0.5', '--seeds=0,1', '--protocol=qam']) is None
    args = stability.FLAGS
    configs = stability.configurations(args.temperatures, args.budgets, args.clip_grad_norm)
    for seed in (0, 1):  # both seeds of QAM with the clip diverged in an earlier run, seed 0 of TRQAM too
        fake_run(str(tmp_path / configs[0].run_name(args.env_name).format(seed=seed)), [1.0], [], 10, diverged_at=5)
    fake_run(str(tmp_path / configs[2].run_name(args.env_name).format(seed=0)), [1.0], [], 10, diverged_at=5)

    calls = []

    def train(flag_values, agent_config, stop, explicit):
        calls.append((flag_values['run_name'], flag_values['seeds'], dict(agent_config), set(explicit)))
        if len(calls) == 1:
            raise stability.main_py.TrainingDiverged('Training diverged at step 7')  # the next configuration runs

    monkeypatch.setattr(stability.main_py, 'train', train)
    results = stability.run_configurations(args, configs)
    assert [config for config, _ in results] == configs
    assert [(name, seeds) for name, seeds, _, _ in calls] == [
        ('qam_invtemp3_noclip_lift-mh-low_dim_seed{seed}', ['0', '1']),
        ('trqam_kl0.5_clip1_lift-mh-low_dim_seed{seed}', ['1'])]
    (_, _, qam, explicit), (_, _, trqam, _) = calls
    assert (qam['inv_temp'], qam['clip_grad_norm'], qam['num_qs'], trqam['kl_budget']) == (3.0, 0.0, 2, 0.5)
    assert {'agent.inv_temp', 'agent.clip_grad_norm', 'agent.kl_budget', 'agent.num_qs'} <= explicit
    assert results[2][1] == {seed: str(tmp_path / f'trqam_kl0.5_clip1_lift-mh-low_dim_seed{seed}') for seed in (0, 1)}


def test_command_line_that_cannot_run_stops_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(stability, 'run_configurations', lambda *args: pytest.fail('a configuration ran'))
    assert stability.main(['stability.py', '--qam_methods=QAM,FQL', f'--save_dir={tmp_path}']) == 2
    assert stability.main(['stability.py', '--temperatures=', '--budgets=', f'--save_dir={tmp_path}']) == 2
    assert stability.main(['stability.py', '--help']) == 0
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------------------
# End to end.
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def lift_dataset(tmp_path):
    for module in ('h5py', 'robosuite'):
        pytest.importorskip(module, reason=f'the Robomimic runs need {module}: '
                            'pip install --no-deps -r requirements-robomimic.txt')
    path = tmp_path / 'lift.hdf5'
    robomimic_fixtures.write_lift_dataset(str(path))
    return str(path)


def test_tiny_experiment_writes_the_report_and_resumes(lift_dataset, tmp_path, monkeypatch):
    # 20-step episodes: the experiment's plumbing is under test here, not the task (tests/test_robomimic_main.py
    # runs the 300-step episodes of main.py).
    from envs import robomimic
    monkeypatch.setitem(robomimic.MAX_EPISODE_STEPS, 'lift', 20)
    save_dir = tmp_path / 'runs'
    command = ['stability.py', '--tiny', f'--dataset_path={lift_dataset}', f'--save_dir={save_dir}', '--temperatures=1',
               '--budgets=1', *TINY_STEPS]
    assert stability.main(command) == 0

    report = json.load(open(save_dir / 'stability.json'))
    assert os.path.getsize(save_dir / 'stability.png') > 0
    labels = [entry['label'] for entry in report['configurations']]
    assert labels == ['QAM inv_temp=1, clip 1', 'QAM inv_temp=1, no clip', 'TRQAM kl_budget=1, clip 1']
    for entry in report['configurations']:
        assert entry['steps'] == [10, 20] and entry['eval_steps'] == [20] and entry['diverged_at'] == {}
        for name in ('adj_loss', 'path_kl', 'grad_norm') + (('lambda',) if entry['method'] == 'TRQAM' else ()):
            assert len(entry[name]) == 2 and all(math.isfinite(value) for value in entry[name]), (entry['label'], name)
        assert all(value >= 0 for value in entry['adj_loss'] + entry['path_kl'])
        assert 0.0 <= entry['success'][0] <= 1.0
        # The experiment's settings reached main.py, and its protocol ran: the BC stage first.
        flags = json.load(open(os.path.join(entry['run_dirs']['0'], 'flags.json')))
        assert flags['protocol'] == 'trqam' and flags['env_name'] == 'lift-mh-low_dim'
        assert {key: flags['agent'][key] for key in ('clip_grad_norm', 'num_qs', 'actor_hidden_dims')} == \
            {'clip_grad_norm': entry['clip_grad_norm'], 'num_qs': 2, 'actor_hidden_dims': [16, 16]}
        assert flags['agent'].get('inv_temp', flags['agent'].get('kl_budget')) == 1.0
        assert os.path.basename(flags['pretrained_actor_path']) == 'bc_lift-mh-low_dim_seed0_2x16_h5'
    trqam = report['configurations'][2]
    assert 'lambda' in trqam and all(value > 0 for value in trqam['lambda'])
    assert all('lambda' not in entry for entry in report['configurations'][:2])

    # The same command again finds every run finished: nothing is trained or logged again, the report is the same.
    train_csvs = {entry['label']: open(os.path.join(entry['run_dirs']['0'], 'train.csv')).read()
                  for entry in report['configurations']}
    assert stability.main(command) == 0
    assert json.load(open(save_dir / 'stability.json')) == report
    assert all(open(os.path.join(entry['run_dirs']['0'], 'train.csv')).read() == train_csvs[entry['label']]
               for entry in report['configurations'])


def test_missing_dataset_says_how_to_download(tmp_path, capsys):
    status = stability.main(['stability.py', '--tiny', f'--dataset_dir={tmp_path / "nothing"}',
                             f'--save_dir={tmp_path / "runs"}', '--temperatures=1', '--budgets=', *TINY_STEPS])
    assert status == 1
    message = capsys.readouterr().err
    assert 'Robomimic dataset file not found' in message and 'curl -L' in message and 'Traceback' not in message
