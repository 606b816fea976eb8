"""experiments/sweep.py, utils/domains.py and the method registry: the table of jobs, data checks, launchers."""

import os
import subprocess
import sys

import pytest

from experiments import sweep
from tests.conftest import REPO_ROOT
from agents import METHODS
from utils import domains


def flag(command, name):
    values = [arg.split('=', 1)[1] for arg in command if arg.startswith(f'--{name}=')]
    return values[0] if values else None


def test_domain_settings_of_the_papers():
    assert len(domains.DOMAINS) == 10
    env = 'puzzle-4x4-play-singletask-task3-v0'
    assert METHODS['QAM-E'].overrides(env)['inv_temp'] == 0.1
    assert METHODS['QAM-E'].overrides(env)['edit_scale'] == 0.9
    assert METHODS['QAM'].overrides(env)['inv_temp'] == 30
    assert METHODS['FQL'].overrides(env)['alpha'] == 1
    assert METHODS['TRQAM'].overrides(env)['actor_hidden_dims'] == (1024,) * 4
    assert METHODS['BC'].overrides(env) == {'discount': 0.99, 'actor_hidden_dims': (1024,) * 4,
                                            'actor_layer_norm': True}  # the keys bc_flow's config has
    assert domains.run_flags(env, 'data') == {
        'horizon_length': 5, 'sparse': True, 'dataset_shards_dir': os.path.join('data', 'puzzle-4x4-play-10m-v0')}
    humanoid = 'humanoidmaze-large-navigate-singletask-task1-v0'
    assert METHODS['TRQAM'].overrides(humanoid)['discount'] == 0.999
    assert METHODS['TRQAM'].overrides(humanoid)['rho'] == 0.0
    assert METHODS['IFQL'].overrides(humanoid) == {**METHODS['IFQL'].overrides(humanoid),
                                                          'expectile': 0.8, 'discount': 0.995, 'rho': 0.0}
    assert domains.run_flags(humanoid) == {'horizon_length': 1, 'sparse': False}
    assert METHODS['TRQAM'].overrides('cube-triple-play-singletask-task1-v0')['kl_budget'] == 0.5
    assert METHODS['TRQAM'].overrides('cube-double-play-singletask-task1-v0')['discount'] == 0.995
    assert METHODS['CGQL-L'].overrides('scene-play-singletask-task1-v0') == {
        'mode': 'linex', 'inv_temp': 10.0, 'guidance_coef': 0.1, 'noisy_coef': 0.1, 'discount': 0.99, 'rho': 0.5,
        'actor_hidden_dims': (512,) * 4, 'value_hidden_dims': (512,) * 4, 'actor_layer_norm': False}
    assert domains.DOMAINS['cube-quadruple-play'].dataset_size == 100_000_000
    assert domains.DOMAINS['antmaze-giant-navigate'].discount == 0.995
    assert not domains.DOMAINS['antmaze-large-navigate'].generatable
    assert domains.DOMAINS['cube-double-play'].generatable
    with pytest.raises(KeyError, match='cube-double-play'):
        METHODS['QAM'].overrides('cube-single-play-singletask-task1-v0')


def test_paper_sweep_table(tmp_path):
    table = sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path)))
    assert len(table.expected) == 7 * 50 * 8 and len(table.bc_jobs) == 50 * 8
    # QAM-E has QAM's configuration on scene and cube-double (edit_scale 0): 2 domains x 5 tasks x 8 seeds.
    assert len(table.duplicates) == 80 and {d[0] for d in table.duplicates} == {'QAM-E'}
    assert len(table.rl_jobs) == 2800 - 80
    assert set(table.missing_data) == set(domains.DOMAINS)  # nothing under an empty folder
    bc_dirs = {job.run_dir for job in table.bc_jobs}
    assert all(job.depends_on in bc_dirs and flag(job.command, 'pretrained_actor_path') == job.depends_on
               for job in table.rl_jobs)
    assert len({job.run_dir for job in table.rl_jobs}) == len(table.rl_jobs)  # QAM and QAM-E do not collide

    (bc,) = [job for job in table.bc_jobs if job.env_name == 'cube-triple-play-singletask-task2-v0' and job.seed == 3]
    assert '--bc_only' in bc.command and flag(bc.command, 'agent') == 'agents/bc_flow.py'
    assert flag(bc.command, 'agent.actor_hidden_dims') == '(1024,1024,1024,1024)'
    assert flag(bc.command, 'offline_steps') == '300000'
    assert flag(bc.command, 'dataset_shards_dir') == os.path.join(str(tmp_path), 'cube-triple-play-10m-v0')
    trqam = [job for job in table.rl_jobs if job.method == 'TRQAM' and job.depends_on == bc.run_dir]
    assert len(trqam) == 1 and flag(trqam[0].command, 'agent.kl_budget') == '0.5'
    assert flag(trqam[0].command, 'agent.value_hidden_dims') == '(1024,1024,1024,1024)'
    assert flag(trqam[0].command, 'online_steps') == '500000'
    scene = [job for job in table.rl_jobs if job.env_name.startswith('scene') and job.method == 'FQL']
    assert all('--sparse' in job.command and flag(job.command, 'dataset_dir') == str(tmp_path) for job in scene)

    per_domain = sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path), bc_per_domain=True))
    assert len(per_domain.bc_jobs) == 10 * 8 and len(per_domain.rl_jobs) == 2720


def test_data_presence_is_checked(tmp_path):
    for suffix in ('', '-val'):
        (tmp_path / f'cube-double-play-v0{suffix}.npz').write_bytes(b'')
    (tmp_path / 'cube-triple-play-10m-v0').mkdir()
    (tmp_path / 'cube-triple-play-10m-v0' / 'cube-triple-play-v0-000.npz').write_bytes(b'')
    spec = sweep.resolve_spec('paper', dataset_dir=str(tmp_path), seeds=(0,), tasks=(1,))
    table = sweep.build_sweep(spec)
    assert 'cube-double-play' not in table.missing_data and 'cube-triple-play' not in table.missing_data
    assert 'download only' in table.missing_data['antmaze-large-navigate']
    assert 'generate_dataset.py' in table.missing_data['scene-play']
    bc, rl = table.launchable()
    assert {job.env_name for job in bc} == {'cube-double-play-singletask-task1-v0',
                                            'cube-triple-play-singletask-task1-v0'}
    text = sweep.summary(table)
    assert 'Data missing' in text and 'antmaze-large-navigate' in text


def test_cpu_preset_commands_are_small():
    table = sweep.build_sweep(sweep.resolve_spec('cpu'))
    assert len(table.expected) == 7 * 3 * 2 and len(table.bc_jobs) == 6
    command = table.rl_jobs[0].command
    assert flag(command, 'agent.actor_hidden_dims') == '(64,64)' and flag(command, 'agent.num_qs') == '2'
    assert flag(table.bc_jobs[0].command, 'agent.num_qs') is None  # bc_flow has no critic
    assert sweep.expected_runs('cpu') == table.expected


def test_dry_run_prints_commands_and_counts():
    result = subprocess.run([sys.executable, 'experiments/sweep.py', '--dry_run', '--seeds=0', '--domains=scene-play'],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith('python main.py') for line in lines) == 5 + 5 * 6
    assert '7 methods x 5 tasks x 1 seeds = 35 runs in the table' in result.stdout


def test_slurm_scripts(tmp_path):
    table = sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path), seeds=(0, 1), tasks=(1,)))
    submit = sweep.write_slurm(table.bc_jobs, table.rl_jobs, str(tmp_path / 'slurm'), array_limit=100,
                               extra=['--account=abc'], setup=['source .venv/bin/activate'])
    files = sorted(os.listdir(tmp_path / 'slurm'))
    assert 'bc_000.sbatch' in files and 'rl_000.sbatch' in files and 'rl_001.sbatch' in files  # 136 jobs: 2 arrays
    script = (tmp_path / 'slurm' / 'rl_001.sbatch').read_text()
    assert '#SBATCH --requeue' in script and '#SBATCH --signal=B:USR1@300' in script
    assert '#SBATCH --array=0-35' in script and '#SBATCH --account=abc' in script and 'scontrol requeue' in script
    assert len((tmp_path / 'slurm' / 'rl_000.txt').read_text().splitlines()) == 100
    text = open(submit).read()
    assert '--dependency=afterok$BC_IDS' in text and text.count('sbatch --parsable') == 3


def _fake_job(tmp_path, stage, name, code, depends_on=None):
    run_dir = str(tmp_path / name)
    return sweep.Job(stage, 'X', 'env', 0, run_dir, ['python', '-c', code], total_steps=10, depends_on=depends_on)


def test_local_launcher_runs_bc_first_and_skips_dependants_of_failures(tmp_path):
    def finishing(name):
        return (f"import os; os.makedirs({str(tmp_path / name)!r}, exist_ok=True); "
                f"open(os.path.join({str(tmp_path / name)!r}, 'eval.csv'), 'w').write('step,x\\n10,1\\n')")

    good_bc = _fake_job(tmp_path, 'bc', 'bc_good', finishing('bc_good'))
    bad_bc = _fake_job(tmp_path, 'bc', 'bc_bad', 'import sys; sys.exit(3)')
    after_good = _fake_job(tmp_path, 'rl', 'rl_good', finishing('rl_good') + "; import os; "
                           f"assert os.path.exists({str(tmp_path / 'bc_good' / 'eval.csv')!r})", good_bc.run_dir)
    after_bad = _fake_job(tmp_path, 'rl', 'rl_bad', finishing('rl_bad'), bad_bc.run_dir)
    status = sweep.run_local([good_bc, bad_bc], [after_good, after_bad], max_workers=2,
                             log_dir=str(tmp_path / 'logs'), log=lambda *args: None)
    assert status[good_bc.run_dir].startswith('ok') and status[after_good.run_dir].startswith('ok')
    assert status[bad_bc.run_dir].startswith('failed with exit code 3')
    assert status[after_bad.run_dir].startswith('skipped')
    assert not os.path.exists(after_bad.run_dir)
    # A second launch skips the finished runs.
    status = sweep.run_local([good_bc], [after_good], max_workers=1, log_dir=str(tmp_path / 'logs'),
                             log=lambda *args: None)
    assert set(status.values()) == {'complete'}


def test_network_overrides_reach_the_bc_jobs_too(tmp_path):
    spec = sweep.resolve_spec('paper', dataset_dir=str(tmp_path), domains=('cube-double-play',), tasks=(1,),
                              seeds=(0,), extra_agent_overrides={'actor_hidden_dims': (32, 32), 'lr': 1e-4})
    table = sweep.build_sweep(spec)
    (bc,) = table.bc_jobs
    assert flag(bc.command, 'agent.actor_hidden_dims') == '(32,32)' and flag(bc.command, 'agent.lr') is None
    assert all(flag(job.command, 'agent.actor_hidden_dims') == '(32,32)' for job in table.rl_jobs)
