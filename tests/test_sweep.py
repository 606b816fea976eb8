"""experiments/sweep.py and presets.py, protocols/domains.py and the method registry: the table of jobs under each
protocol, what main.py makes of every job's command, data checks, the cost estimate and the launchers."""

import ast
import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from core.errors import EXIT_PREEMPTED
from protocols.methods import METHODS, Method, paper_methods
from experiments import presets, sweep
from runner.flags import default_flag_values as main_flag_defaults
from tests.conftest import REPO_ROOT
from protocols import domains
from protocols.domains import PROTOCOLS


def flag(command, name):
    values = [arg.split('=', 1)[1] for arg in command if arg.startswith(f'--{name}=')]
    return values[0] if values else None


@pytest.fixture(scope='module')
def paper_sweeps(tmp_path_factory):
    """The full paper sweep under both protocols, one seed and four seeds per job (built once)."""
    data = str(tmp_path_factory.mktemp('no_data'))
    return {(protocol, per_job): sweep.build_sweep(sweep.resolve_spec('paper', protocol=protocol, dataset_dir=data,
                                                                       seeds_per_job=per_job))
            for protocol in ('trqam', 'qam') for per_job in (1, 4)}


# ----------------------------------------------------------------------------------------------------------------------
# The papers' settings, written out from docs/algorithms.md sections 7-9 (not from the code).
# ----------------------------------------------------------------------------------------------------------------------

# Section 7 (chunk length H, rewards, the trqam column's datasets and networks) and 9.1 (discount and rho of every
# method under each protocol).
#  domain                          H  sparse  trqam data  trqam 4x1024+LN  discount trqam  discount qam  rho
DOCS_DOMAINS = {
    'antmaze-large-navigate':       (1, False, None,                          False, 0.995, 0.99,  0.5),
    'antmaze-giant-navigate':       (1, False, 'antmaze-giant-navigate-10m-v0', True,  0.995, 0.995, 0.5),
    'humanoidmaze-medium-navigate': (1, False, None,                          False, 0.999, 0.995, 0.0),
    'humanoidmaze-large-navigate':  (1, False, None,                          False, 0.999, 0.995, 0.0),
    'scene-play':                   (5, True,  None,                          False, 0.995, 0.99,  0.5),
    'puzzle-3x3-play':              (5, True,  None,                          False, 0.995, 0.99,  0.5),
    'puzzle-4x4-play':              (5, True,  'puzzle-4x4-play-10m-v0',      True,  0.995, 0.99,  0.5),
    'cube-double-play':             (5, False, None,                          False, 0.995, 0.99,  0.5),
    'cube-triple-play':             (5, False, 'cube-triple-play-10m-v0',     True,  0.995, 0.99,  0.5),
    'cube-quadruple-play':          (5, False, 'cube-quadruple-play-100m-v0', True,  0.995, 0.99,  0.5),
}
# Section 9.1: the QAM paper's shard folders (its authors' experiments/reproduce.py); the 1M datasets elsewhere.
DOCS_QAM_SHARDS = {'puzzle-4x4-play': 'puzzle-4x4-play-100m-v0', 'cube-quadruple-play': 'cube-quadruple-play-100m-v0'}
# Section 8: QAM inv_temp | QAM-E inv_temp, edit_scale | FQL alpha | IFQL kappa | DSRL noise_scale |
# CGQL-L inv_temp, guidance_coef, noisy_coef | TRQAM eps_KL.
DOCS_METHODS = {
    'antmaze-large-navigate':       (10, (1, 0.1),   3,   0.9,  0.8, (10, 0.1, 0.001),  1.0),
    'antmaze-giant-navigate':       (3,  (10, 0.1),  3,   0.8,  1.2, (10, 0.1, 0.001),  1.0),
    'humanoidmaze-medium-navigate': (3,  (3, 0.1),   30,  0.7,  0.6, (10, 0.1, 0.1),    1.0),
    'humanoidmaze-large-navigate':  (3,  (3, 0.1),   30,  0.8,  0.8, (10, 0.1, 0.1),    1.0),
    'scene-play':                   (1,  (1, 0.0),   300, 0.9,  0.4, (10, 0.1, 0.1),    1.0),
    'puzzle-3x3-play':              (3,  (1, 0.1),   300, 0.95, 1.0, (10, 0.1, 0.001),  1.0),
    'puzzle-4x4-play':              (30, (0.1, 0.9), 1,   0.9,  1.0, (10, 1.0, 0.001),  1.0),
    'cube-double-play':             (1,  (1, 0.0),   300, 0.9,  1.0, (10, 0.01, 0.001), 1.0),
    'cube-triple-play':             (3,  (3, 0.1),   30,  0.95, 1.4, (10, 0.1, 0.001),  0.5),
    'cube-quadruple-play':          (1,  (3, 0.1),   100, 0.95, 1.4, (10, 0.01, 0.1),   1.0),
}
# Section 12.3: ReBRAC alpha_actor, actor_noise | FBRAC alpha | FAWAC inv_temp | FEdit edit_scale.
DOCS_QAM_BASELINES = {
    'antmaze-large-navigate':       ((0.01, 0.0), 0.1,  6.4, 0.2),
    'antmaze-giant-navigate':       ((0.01, 0.0), 0.1,  0.8, 0.3),
    'humanoidmaze-medium-navigate': ((0.01, 0.0), 30,   6.4, 0.5),
    'humanoidmaze-large-navigate':  ((0.01, 0.1), 10,   0.8, 0.1),
    'scene-play':                   ((0.03, 0.0), 100,  6.4, 0.2),
    'puzzle-3x3-play':              ((0.1, 0.0),  0.03, 0.8, 0.2),
    'puzzle-4x4-play':              ((0.01, 0.2), 0.3,  0.8, 0.8),
    'cube-double-play':             ((0.01, 0.0), 0.1,  0.8, 0.2),
    'cube-triple-play':             ((0.01, 0.2), 0.03, 0.8, 0.3),
    'cube-quadruple-play':          ((0.01, 0.2), 1.0,  0.8, 0.4),
}
# Section 13.4: BAM inv_temp | QSM inv_temp, alpha | DAC alpha | RLPD bc_alpha.
DOCS_QAM_BASELINES_13 = {
    'antmaze-large-navigate':       (30, (10, 10), 0.3, 0),
    'antmaze-giant-navigate':       (30, (10, 10), 0.3, 0.01),
    'humanoidmaze-medium-navigate': (10, (10, 30), 1,   0.03),
    'humanoidmaze-large-navigate':  (30, (10, 30), 0.3, 0),
    'scene-play':                   (10, (3, 30),  1,   0.3),
    'puzzle-3x3-play':              (10, (10, 30), 1,   0.01),
    'puzzle-4x4-play':              (30, (10, 1),  1,   0),
    'cube-double-play':             (10, (1, 10),  3,   0.1),
    'cube-triple-play':             (30, (10, 10), 0.3, 0),
    'cube-quadruple-play':          (10, (1, 10),  1,   0),
}
# Section 13.3: RLPD's runs under both papers' protocols are online only, with balanced batches.
DOCS_RUN_FLAGS = {'RLPD': {'offline_steps': 0, 'balanced_sampling': True}}
# Section 8, the QAM paper's other columns: QAM-F inv_temp, fql_alpha | CGQL inv_temp, guidance_coef |
# CGQL-M inv_temp, guidance_coef, noisy_coef.
DOCS_QAM_METHODS = {
    'antmaze-large-navigate':       ((3, 30),    (10, 0.1),  (10, 0.1, 0.1)),
    'antmaze-giant-navigate':       ((3, 30),    (10, 0.1),  (10, 0.1, 0.001)),
    'humanoidmaze-medium-navigate': ((1, 30),    (10, 0.01), (10, 0.1, 0.1)),
    'humanoidmaze-large-navigate':  ((0.3, 30),  (10, 0.01), (10, 0.1, 0.1)),
    'scene-play':                   ((1, 300),   (10, 0.1),  (10, 0.1, 0.1)),
    'puzzle-3x3-play':              ((3, 0),     (10, 0.1),  (10, 0.1, 0.1)),
    'puzzle-4x4-play':              ((3, 3),     (10, 0.1),  (10, 1.0, 0.001)),
    'cube-double-play':             ((1, 0),     (10, 0.01), (10, 0.01, 0.001)),
    'cube-triple-play':             ((10, 300),  (10, 0.1),  (10, 0.1, 0.001)),
    'cube-quadruple-play':          ((0.3, 30),  (10, 0.1),  (10, 0.01, 0.1)),
}
# Section 9.1: stage 1 is 300K BC steps under trqam and none under qam.
DOCS_BC_STEPS = {'trqam': 300_000, 'qam': 0}


def docs_method_values(label, domain):
    """The method's own settings on `domain` (section 8; QAM is QAM-E without edit and FQL terms, CGQL-L the
    linex mode: section 5/6), as `--agent.KEY` values. CGQL's inv_temp (10 everywhere) is its config's. Methods
    section 8 does not list: only the domain's settings."""
    qam, (qam_e_temp, qam_e_edit), alpha, kappa, noise, (_, guidance, noisy), eps_kl = DOCS_METHODS[domain]
    (alpha_actor, actor_noise), fbrac_alpha, fawac_temp, fedit_scale = DOCS_QAM_BASELINES[domain]
    bam_temp, (qsm_temp, qsm_alpha), dac_alpha, rlpd_bc_alpha = DOCS_QAM_BASELINES_13[domain]
    (qam_f_temp, qam_f_alpha), (_, simple_guidance), (_, mse_guidance, mse_noisy) = DOCS_QAM_METHODS[domain]
    return {
        'BAM': {'inv_temp': bam_temp},
        # Section 13.2: QSM clips every step, DAC the denoised estimate.
        'QSM': {'loss': 'qsm', 'clip_denoised': False, 'clip_steps': True, 'inv_temp': qsm_temp, 'alpha': qsm_alpha},
        'DAC': {'loss': 'dac', 'clip_denoised': True, 'clip_steps': False, 'alpha': dac_alpha},
        'RLPD': {'bc_alpha': rlpd_bc_alpha},
        'ReBRAC': {'alpha_actor': alpha_actor, 'actor_noise': actor_noise},
        'FBRAC': {'alpha': fbrac_alpha},
        'FAWAC': {'inv_temp': fawac_temp},
        'FEdit': {'edit_scale': fedit_scale},
        'TRQAM': {'kl_budget': eps_kl},
        'QAM': {'inv_temp': qam, 'edit_scale': 0.0, 'fql_alpha': 0.0},
        'QAM-E': {'inv_temp': qam_e_temp, 'edit_scale': qam_e_edit, 'fql_alpha': 0.0},
        'FQL': {'alpha': alpha},
        'IFQL': {'expectile': kappa},
        'DSRL': {'noise_scale': noise},
        'CGQL-L': {'mode': 'linex', 'guidance_coef': guidance, 'noisy_coef': noisy},
        'QAM-F': {'inv_temp': qam_f_temp, 'fql_alpha': qam_f_alpha, 'edit_scale': 0.0},
        'CGQL': {'mode': 'simple', 'guidance_coef': simple_guidance},
        'CGQL-M': {'mode': 'mse', 'guidance_coef': mse_guidance, 'noisy_coef': mse_noisy},
    }.get(label, {})


def docs_settings(label, domain, protocol, dataset_dir='DATA'):
    """Everything the docs say `protocol` sets for method `label` on `domain`, as `Method.protocol_settings`."""
    horizon, sparse, shards, large, discount_trqam, discount_qam, rho = DOCS_DOMAINS[domain]
    large = large and protocol == 'trqam'
    dims = (1024,) * 4 if large else (512,) * 4
    settings = {'horizon_length': horizon, 'sparse': sparse, 'bc_steps': DOCS_BC_STEPS[protocol],
                'agent.discount': discount_trqam if protocol == 'trqam' else discount_qam, 'agent.rho': rho,
                'agent.actor_hidden_dims': dims, 'agent.value_hidden_dims': dims, 'agent.actor_layer_norm': large}
    if shards and protocol == 'trqam':
        settings['dataset_shards_dir'] = os.path.join(dataset_dir, shards)
    if domain in DOCS_QAM_SHARDS and protocol == 'qam':
        settings['dataset_shards_dir'] = os.path.join(dataset_dir, DOCS_QAM_SHARDS[domain])
    settings.update(DOCS_RUN_FLAGS.get(label, {}))
    settings.update({f'agent.{key}': value for key, value in docs_method_values(label, domain).items()})
    return settings


def _normalized(settings):
    return {key: (tuple(value) if isinstance(value, list) else value) for key, value in settings.items()}


@pytest.mark.parametrize('label', ['ReBRAC', 'FBRAC', 'FAWAC', 'FEdit', 'BAM', 'QSM', 'DAC', 'RLPD'])
def test_the_qam_papers_other_baselines_resolve_to_the_docs_table(label):
    for protocol in ('qam', 'trqam'):
        for domain in DOCS_DOMAINS:
            env_name = f'{domain}-singletask-task2-v0'
            got = _normalized(METHODS[label].protocol_settings(env_name, protocol, 'DATA'))
            assert got == docs_settings(label, domain, protocol), (label, env_name, protocol)


_CLONE_SCRIPT = '''
import json, os, sys
from core.errors import EXIT_PREEMPTED
from protocols.methods import METHODS, paper_methods
from protocols.domains import DOMAINS
assert not os.path.exists(os.path.join('..', 'shared')), 'not a fresh clone'
columns = [label for label in METHODS if label in paper_methods('trqam') + paper_methods('qam')]
print(json.dumps({f'{label}|{env}|{protocol}': METHODS[label].protocol_settings(env, protocol, 'DATA')
                  for protocol in ('trqam', 'qam') for label in columns
                  for domain in DOMAINS.values() for env in domain.env_names()}))
'''


def test_a_fresh_clone_resolves_every_task_to_the_docs_table(tmp_path):
    # A copy of the sources with no ../shared beside it (a fresh clone), resolved in its own process.
    clone = tmp_path / 'clone'
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', 'runs', 'data', 'reference_results')
    for name in ('core', 'agents', 'envs', 'protocols', 'runner', 'experiments'):
        shutil.copytree(os.path.join(REPO_ROOT, name), clone / name, ignore=ignore)
    shutil.copy(os.path.join(REPO_ROOT, 'main.py'), clone / 'main.py')
    env = {**os.environ, 'PYTHONPATH': str(clone), 'JAX_PLATFORMS': 'cpu'}
    result = subprocess.run([sys.executable, '-c', _CLONE_SCRIPT], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = json.loads(result.stdout.strip().splitlines()[-1])
    columns = [label for label in METHODS if label in paper_methods('trqam') + paper_methods('qam')]
    assert len(resolved) == 2 * len(columns) * 50 and len(columns) >= 10
    assert len(domains.DOMAINS) == 10 and set(domains.DOMAINS) == set(DOCS_DOMAINS)
    for protocol in ('trqam', 'qam'):  # both papers' columns under both protocols
        for label in columns:
            for domain in DOCS_DOMAINS:
                for task in range(1, 6):
                    env_name = f'{domain}-singletask-task{task}-v0'
                    got = _normalized(resolved[f'{label}|{env_name}|{protocol}'])
                    assert got == docs_settings(label, domain, protocol), (label, env_name, protocol)
    # The CGQL columns' inv_temp of the docs' tables is their config file's, the same on every domain.
    assert METHODS['CGQL-L'].default_config().inv_temp == 10


def test_domain_settings_of_the_papers():
    env = 'puzzle-4x4-play-singletask-task3-v0'
    assert METHODS['QAM-E'].overrides(env, 'trqam')['edit_scale'] == 0.9
    assert METHODS['TRQAM'].overrides(env, 'trqam')['actor_hidden_dims'] == (1024,) * 4
    assert METHODS['TRQAM'].overrides(env, 'qam')['actor_hidden_dims'] == (512,) * 4
    assert METHODS['BC'].overrides(env, 'trqam') == {'discount': 0.995, 'actor_hidden_dims': (1024,) * 4,
                                                     'actor_layer_norm': True}  # the keys bc_flow's config has
    assert PROTOCOLS['trqam'].run_flags(env, 'data') == {
        'horizon_length': 5, 'sparse': True, 'bc_steps': 300_000,
        'dataset_shards_dir': os.path.join('data', 'puzzle-4x4-play-10m-v0')}
    assert PROTOCOLS['qam'].run_flags(env, 'data') == {  # the QAM paper ran puzzle-4x4 on the 100M dataset
        'horizon_length': 5, 'sparse': True, 'bc_steps': 0,
        'dataset_shards_dir': os.path.join('data', 'puzzle-4x4-play-100m-v0')}
    assert 'dataset_shards_dir' not in PROTOCOLS['qam'].run_flags('cube-triple-play-singletask-task1-v0', 'data')
    assert PROTOCOLS['none'].run_flags(env, 'data') == {} and PROTOCOLS['none'].agent_settings(env) == {}
    assert METHODS['QAM-E'].overrides(env, 'none') == {'fql_alpha': 0.0}  # only what makes the method
    assert domains.DOMAINS['cube-quadruple-play'].dataset_size == 100_000_000
    assert not domains.DOMAINS['antmaze-large-navigate'].generatable
    # A domain outside the table: the authors' defaults, no per-domain method values.
    single = 'cube-single-play-singletask-task1-v0'
    assert METHODS['QAM'].overrides(single, 'trqam') == {
        'discount': 0.995, 'rho': 0.5, 'actor_hidden_dims': (512,) * 4, 'value_hidden_dims': (512,) * 4,
        'actor_layer_norm': False, 'edit_scale': 0.0, 'fql_alpha': 0.0}
    with pytest.raises(KeyError, match='cube-double-play'):
        domains.table_domain('cube-single-play')


def test_same_configuration_under_each_protocol():
    scene, puzzle, lift = ('scene-play-singletask-task1-v0', 'puzzle-4x4-play-singletask-task1-v0', 'lift-mh-low_dim')

    def qam_config(env, protocol):
        return sweep.resolve_agent(METHODS['QAM'], env, protocol, 'DATA', {})

    # QAM-E's per-domain edit_scale is 0 on scene under both papers' protocols: it is QAM there.
    assert METHODS['QAM-E'].is_configured_as(qam_config(scene, 'trqam'), scene, 'trqam')
    assert METHODS['QAM-E'].is_configured_as(qam_config(scene, 'qam'), scene, 'qam')
    assert not METHODS['QAM-E'].is_configured_as(qam_config(puzzle, 'trqam'), puzzle, 'trqam')
    # Without the per-domain table (--protocol=none, Robomimic) QAM-E keeps its config file's edit_scale 0.1.
    assert not METHODS['QAM-E'].is_configured_as(qam_config(scene, 'none'), scene, 'none')
    assert not METHODS['QAM-E'].is_configured_as(qam_config(lift, 'trqam'), lift, 'trqam')
    assert not METHODS['FQL'].is_configured_as(qam_config(scene, 'trqam'), scene, 'trqam')


# ----------------------------------------------------------------------------------------------------------------------
# The paper sweep.
# ----------------------------------------------------------------------------------------------------------------------


def test_paper_sweep_job_counts_under_both_protocols(paper_sweeps):
    trqam, trqam4 = paper_sweeps[('trqam', 1)], paper_sweeps[('trqam', 4)]
    for table in (trqam, trqam4):
        assert len(table.expected) == 7 * 50 * 8 == 2800 and table.bc_runs == 50 * 8
        # QAM-E has QAM's configuration on scene and cube-double (edit_scale 0): 2 domains x 5 tasks x 8 seeds.
        assert len(table.duplicates) == 80 and {d[0] for d in table.duplicates} == {'QAM-E'}
        assert table.rl_runs == 2800 - 80
    assert len(trqam.bc_jobs) == 400 and len(trqam.rl_jobs) == 2720
    assert len(trqam4.bc_jobs) == 100 and len(trqam4.rl_jobs) == 680  # 4 seeds per main.py process
    assert all(len(job.seeds) == 4 and len(job.run_dirs) == 4 for job in trqam4.bc_jobs + trqam4.rl_jobs)

    qam, qam4 = paper_sweeps[('qam', 1)], paper_sweeps[('qam', 4)]
    columns = len(paper_methods('qam'))  # every column of the QAM paper's table
    assert set(qam.spec.methods) == set(paper_methods('qam')) and {job.method for job in qam.rl_jobs} == set(
        paper_methods('qam'))
    for table in (qam, qam4):  # the QAM paper: 12 seeds, one stage
        # QAM-E is QAM on scene and cube-double, QAM-F on puzzle-3x3 and cube-double: 4 x 5 tasks x 12 seeds.
        assert len(table.expected) == columns * 50 * 12 and not table.bc_jobs and len(table.duplicates) == 240
        assert {(label, domains.domain_name(env), same) for label, env, _, same in table.duplicates} == {
            ('QAM-E', 'scene-play', 'QAM'), ('QAM-E', 'cube-double-play', 'QAM'),
            ('QAM-F', 'puzzle-3x3-play', 'QAM'), ('QAM-F', 'cube-double-play', 'QAM')}
        assert table.rl_runs == columns * 600 - 240 and table.spec.save_dir == 'runs/paper_qam'
        assert all(flag(job.command, 'pretrained_actor_path') is None and '--bc_only' not in job.command
                   and flag(job.command, 'bc_steps') is None and job.depends_on is None for job in table.rl_jobs)
    assert len(qam.rl_jobs) == columns * 600 - 240 and len(qam4.rl_jobs) == columns * 150 - 60
    assert presets.expected_runs('paper', protocol='qam') == qam.expected

    assert set(trqam.missing_data) == set(domains.DOMAINS)  # nothing under an empty folder
    bc_names = {job.name: job for job in trqam.bc_jobs}
    for job in trqam.rl_jobs:
        assert flag(job.command, 'pretrained_actor_path') == bc_names[job.depends_on].run_dirs[0]
    assert len({run_dir for job in trqam.rl_jobs for run_dir in job.run_dirs}) == 2720  # QAM and QAM-E do not collide


def test_jobs_set_only_what_the_spec_must(paper_sweeps):
    table = paper_sweeps[('trqam', 1)]
    (bc,) = [job for job in table.bc_jobs
             if job.env_name == 'cube-triple-play-singletask-task2-v0' and job.seeds == (3,)]
    assert bc.name == 'bc_cube-triple-play-singletask-task2-v0_seed3_4x1024ln_h5'
    assert bc.command[:5] == ['python', 'main.py', '--bc_only', '--protocol=trqam', '--agent=agents/bc_flow.py']
    assert flag(bc.command, 'bc_steps') == '300000' and flag(bc.command, 'seed') == '3'
    (qam_e,) = [job for job in table.rl_jobs if job.method == 'QAM-E' and job.seeds == (0,)
                and job.env_name == 'puzzle-4x4-play-singletask-task2-v0']
    # The protocol sets the per-domain values: the command does not.
    assert flag(qam_e.command, 'protocol') == 'trqam' and flag(qam_e.command, 'agent') == 'agents/qam_e.py'
    assert not [arg for arg in qam_e.command if arg.startswith(('--agent.', '--sparse', '--horizon_length',
                                                                 '--dataset_shards_dir', '--run_name'))]
    assert os.path.basename(qam_e.run_dirs[0]) == qam_e.name == 'qam-e_puzzle-4x4-play-singletask-task2-v0_seed0'
    four = [job for job in paper_sweeps[('trqam', 4)].rl_jobs if job.method == 'QAM-E'
            and job.env_name == 'puzzle-4x4-play-singletask-task2-v0']
    assert [flag(job.command, 'seeds') for job in four] == ['0,1,2,3', '4,5,6,7']
    assert flag(four[0].command, 'pretrained_actor_path') == \
        os.path.join('runs/paper', 'bc_puzzle-4x4-play-singletask-task2-v0_seed{seed}_4x1024ln_h5')
    assert [os.path.basename(d) for d in four[1].run_dirs] == [
        f'qam-e_puzzle-4x4-play-singletask-task2-v0_seed{seed}' for seed in (4, 5, 6, 7)]


def _parse(command):
    """main.py's flag values and agent config from a job's command, as `main.main` hands them to `train`."""
    import main

    assert command[:2] == ['python', 'main.py']
    values, overrides, explicit, agent_file = main.default_flag_values(), {}, set(), None
    for arg in command[2:]:
        name, _, text = arg[2:].partition('=')
        if name == 'agent':
            agent_file = text
        elif name.startswith('agent.'):
            try:
                overrides[name[len('agent.'):]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                overrides[name[len('agent.'):]] = text
            explicit.add(name)
        else:
            if not text and name not in main.FLAGS:
                name, value = name[2:], False  # --noFLAG
            else:
                value = main.FLAGS[name].parser.parse(text) if text else True
            values[name] = value
            explicit.add(name)
    config = importlib.import_module(agent_file[:-len('.py')].replace('/', '.')).get_config()
    with config.unlocked():
        config.update(overrides)
    return values, config, explicit


def _resolve(command):
    import main

    values, config, explicit = _parse(command)
    return main.resolve_config(values, config, explicit, main.default_flag_values())


@pytest.mark.parametrize('protocol', ['trqam', 'qam'])
def test_every_command_resolves_in_main_to_the_table(paper_sweeps, protocol):
    # Every command of the paper sweep (4 seeds per job) but the seeds: those of seeds 0-3, run through main.py's
    # own resolution (runner/settings.py) as main.py's command line hands them to it.
    table = paper_sweeps[(protocol, 4)]
    dataset_dir = table.spec.dataset_dir
    bc_jobs = {job.name: job for job in table.bc_jobs}
    for job in table.bc_jobs:
        if job.seeds != (0, 1, 2, 3):
            continue
        config = _resolve(job.command)
        assert config.bc_only and config.method == 'BC' and config.offline_steps == 300_000
        assert config.run_dirs == job.run_dirs and config.seeds == (0, 1, 2, 3)
    checked = set()
    for job in table.rl_jobs:
        if job.seeds != (0, 1, 2, 3):
            continue
        config = _resolve(job.command)
        domain = domains.domain_name(job.env_name)
        expected = docs_settings(job.method, domain, protocol, dataset_dir)
        agent = config.agent.to_dict()
        for key, value in expected.items():
            got = agent[key[len('agent.'):]] if key.startswith('agent.') else config[key]
            assert _normalized({key: got}) == {key: value}, (job.name, key)
        assert config.method == job.method and config.run_dirs == job.run_dirs
        if 'dataset_shards_dir' not in expected:
            assert config.dataset_shards_dir is None
        assert config.agent.horizon_length == DOCS_DOMAINS[domain][0]
        if protocol == 'trqam':
            # The BC run the command names is the one main.py picks by itself, and the sweep's BC job trains it.
            assert config.pretrained_paths == bc_jobs[job.depends_on].run_dirs and not config.bc_stage
            if (domain, job.method) not in checked:  # (one task per domain: the same rule on every task)
                checked.add((domain, job.method))
                command = [arg for arg in job.command if not arg.startswith('--pretrained_actor_path=')]
                assert _resolve(command).pretrained_paths == config.pretrained_paths
        else:
            assert not config.bc_stage and not any(config.pretrained_paths)
    if protocol == 'trqam':  # QAM-E on puzzle-4x4 gets edit_scale 0.9 from the protocol, not from a flag
        (qam_e,) = [job for job in table.rl_jobs if job.method == 'QAM-E' and job.seeds == (0, 1, 2, 3)
                    and job.env_name == 'puzzle-4x4-play-singletask-task1-v0']
        config = _resolve(qam_e.command)
        assert config.agent.edit_scale == 0.9 and dict(config.protocol_settings)['agent.edit_scale'] == 0.9


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
    # Under the QAM paper's protocol cube-triple reads the 1M dataset, which is not there.
    qam = sweep.build_sweep(sweep.resolve_spec('paper', protocol='qam', dataset_dir=str(tmp_path), seeds=(0,),
                                               tasks=(1,)))
    assert 'cube-triple-play' in qam.missing_data and 'cube-double-play' not in qam.missing_data


def test_cpu_preset_commands_are_small():
    table = sweep.build_sweep(sweep.resolve_spec('cpu'))
    assert len(table.expected) == 7 * 3 * 2 and len(table.bc_jobs) == 6
    command = table.rl_jobs[0].command
    assert flag(command, 'agent.actor_hidden_dims') == '(64,64)' and flag(command, 'agent.num_qs') == '2'
    assert flag(command, 'bc_steps') == '3000' and flag(command, 'eval_episodes') == '10'
    bc = table.bc_jobs[0]
    assert flag(bc.command, 'agent.num_qs') is None and flag(bc.command, 'agent.actor_hidden_dims') == '(64,64)'
    assert bc.name == 'bc_scene-play-singletask-task1-v0_seed0_2x64_h5' and bc.size == 'small'
    assert presets.expected_runs('cpu') == table.expected
    qam = sweep.build_sweep(sweep.resolve_spec('cpu', protocol='qam'))
    assert not qam.bc_jobs and qam.spec.save_dir == 'runs/cpu_preset_qam'
    # The QAM paper's columns; QAM-E is QAM on scene and cube-double, QAM-F on puzzle-3x3 and cube-double.
    assert len(qam.rl_jobs) == len(paper_methods('qam')) * 3 * 2 - 8
    with pytest.raises(ValueError, match='bc_steps'):
        sweep.resolve_spec('paper', protocol='qam', bc_steps=1000)


def test_robomimic_preset(tmp_path):
    spec = sweep.resolve_spec('robomimic', dataset_dir=str(tmp_path))
    table = sweep.build_sweep(spec)
    assert spec.methods == ('TRQAM', 'QAM', 'QAM-E') and spec.domains == ('lift-mh', 'can-mh', 'square-mh')
    assert {env for _, env, _ in table.expected} == {'lift-mh-low_dim', 'can-mh-low_dim', 'square-mh-low_dim'}
    # QAM-E keeps its config's edit_scale (section 8 covers OGBench only): not QAM, launched.
    assert len(table.expected) == 3 * 3 * 8 and not table.duplicates and len(table.rl_jobs) == 72
    assert len(table.bc_jobs) == 24 and table.bc_jobs[0].name == 'bc_lift-mh-low_dim_seed0_4x512_h5'
    assert set(table.missing_data) == {'lift-mh', 'can-mh', 'square-mh'}
    assert 'curl' in table.missing_data['lift-mh'] and 'lift/mh/low_dim_v15.hdf5' in table.missing_data['lift-mh']
    assert 'download' in sweep.summary(table).lower()
    from envs import robomimic

    path = robomimic.dataset_path('lift-mh-low_dim', str(tmp_path))
    os.makedirs(os.path.dirname(path))
    open(path, 'wb').close()
    table = sweep.build_sweep(spec)
    assert 'lift-mh' not in table.missing_data
    assert {job.env_name for job in table.launchable()[1]} == {'lift-mh-low_dim'}
    (qam_e,) = [job for job in table.rl_jobs if job.method == 'QAM-E' and job.env_name == 'lift-mh-low_dim'
                and job.seeds == (0,)]
    config = _resolve(qam_e.command)
    assert config.agent.edit_scale == 0.1 and config.agent.discount == 0.995 and config.agent.horizon_length == 5
    assert config.pretrained_paths == (os.path.join(spec.save_dir, 'bc_lift-mh-low_dim_seed0_4x512_h5'),)


def test_network_overrides_reach_the_bc_jobs_too(tmp_path):
    spec = sweep.resolve_spec('paper', dataset_dir=str(tmp_path), domains=('cube-double-play',), tasks=(1,),
                              seeds=(0,), extra_agent_overrides={'actor_hidden_dims': (32, 32), 'lr': 1e-4})
    table = sweep.build_sweep(spec)
    (bc,) = table.bc_jobs
    # The BC run has the methods' flow (bc_config_for: every key bc_flow has, lr included).
    assert flag(bc.command, 'agent.actor_hidden_dims') == '(32,32)' and flag(bc.command, 'agent.lr') == '0.0001'
    assert bc.name == 'bc_cube-double-play-singletask-task1-v0_seed0_2x32_h5'
    assert all(flag(job.command, 'agent.actor_hidden_dims') == '(32,32)' for job in table.rl_jobs)
    with pytest.raises(ValueError, match='no_such_key'):
        sweep.build_sweep(sweep.resolve_spec('paper', extra_agent_overrides={'no_such_key': 1}))


# ----------------------------------------------------------------------------------------------------------------------
# Cost estimate.
# ----------------------------------------------------------------------------------------------------------------------

COSTS = {  # the costs schema (sweep.check_costs), as experiments/benchmark.py --out writes it
    'device': 'test device', 'command': 'by hand',
    'ms_per_update': {'trqam': {'paper': 10, 'large': 30}, 'fql': {'paper': 5, 'large': 20},
                      'bc': {'paper': 1, 'large': 4}},
    'seed_group_speedup': {'paper': {'1': 1.0, '2': 1.6}},
    'eval_ms_per_episode': {'paper': 100},
}


def costed_sweep(dataset_dir, seeds_per_job, **changes):
    return sweep.build_sweep(sweep.resolve_spec(**{
        'preset': 'paper', 'dataset_dir': str(dataset_dir), 'methods': ('TRQAM', 'FQL'),
        'domains': ('cube-double-play', 'cube-triple-play'), 'tasks': (1,), 'seeds': (0, 1, 2, 3),
        'seeds_per_job': seeds_per_job, 'bc_steps': 1000, 'offline_steps': 2000, 'online_steps': 1000,
        'main_flags': {'eval_interval': 1000, 'eval_episodes': 10}, **changes}))


def test_the_qam_sweep_costs_every_column_and_names_those_without_a_cost(tmp_path, monkeypatch):
    # A column with no measured cost (a new method before experiments/benchmark.py measured it) is counted as 0 and
    # named, not a crash; every other column of the QAM paper is costed from the committed file.
    monkeypatch.setitem(METHODS, 'TOY', Method('TOY', 'tests.toy_agent.ToyAgent', papers=('qam',)))
    table = sweep.build_sweep(sweep.resolve_spec('paper', protocol='qam', dataset_dir=str(tmp_path),
                                                 domains=('antmaze-large-navigate',), tasks=(1,), seeds=(0,)))
    assert [job.method for job in table.rl_jobs] == list(paper_methods('qam')) and 'TOY' in paper_methods('qam')
    report = sweep.estimate_report(table, sweep.DEFAULT_COSTS)
    measured = sweep.load_costs(sweep.DEFAULT_COSTS)['ms_per_update']
    uncosted = {METHODS[label].slug for label in paper_methods('qam')
                if METHODS[label].slug not in measured and METHODS[label].agent_name not in measured}
    notes = {line for line in report.splitlines() if line.startswith('  note: no ms_per_update')}
    assert 'toy' in uncosted and notes == {f'  note: no ms_per_update for {slug} at size paper: its updates count as 0 '
                                           f'(measure them with experiments/benchmark.py --agents={slug} --out=FILE)'
                                           for slug in uncosted}
    assert 'seeds_per_job=1: %d jobs' % len(paper_methods('qam')) in report


def test_device_hours_from_a_costs_file(tmp_path):
    table = costed_sweep(tmp_path, seeds_per_job=2)
    assert [job.size for job in table.bc_jobs] == ['paper', 'paper', 'large', 'large']
    assert [job.evaluations for job in table.bc_jobs + table.rl_jobs[:1]] == [1, 1, 1, 1, 3]
    # One seed per process, per seed (ms): BC 1000 updates + 1 evaluation of 10 episodes; methods 3000 updates
    # and 3 evaluations. 4 x 512 on cube-double, 4 x 1024 on cube-triple (evaluation there as at 4 x 512).
    bc = 4 * (1000 * 1 + 10 * 100) + 4 * (1000 * 4 + 10 * 100)
    trqam = 4 * (3000 * 10 + 3 * 10 * 100) + 4 * (3000 * 30 + 3 * 10 * 100)
    fql = 4 * (3000 * 5 + 3 * 10 * 100) + 4 * (3000 * 20 + 3 * 10 * 100)
    one = sweep.estimate(table, COSTS, one_seed_per_process=True)
    assert one.jobs == 8 + 16 and one.total == pytest.approx((bc + trqam + fql) / 3.6e6)
    assert sum(one.hours['bc']) == pytest.approx(bc / 3.6e6)
    assert list(one.notes.values()) == [2 + 4]  # the one assumption: evaluation of the cube-triple jobs
    # Two seeds per process: the file's 2-seed speed-up (measured at 4 x 512, used for 4 x 1024 too).
    two = sweep.estimate(table, COSTS)
    assert two.jobs == 4 + 8 and two.total == pytest.approx(one.total / 1.6) and len(two.notes) == 2
    # Four seeds per process with only a 2-seed figure: the largest measured group of at most 4 seeds.
    four = sweep.estimate(costed_sweep(tmp_path, seeds_per_job=4), COSTS)
    assert four.jobs == 2 + 4 and four.total == pytest.approx(one.total / 1.6)
    # Without speed-ups: as many single-seed processes; agents without a cost are not counted, and named.
    partial = {**COSTS, 'seed_group_speedup': {}, 'ms_per_update': {'trqam': {'paper': 10, 'large': 30}}}
    grouped, single = sweep.estimate(table, partial), sweep.estimate(table, partial, one_seed_per_process=True)
    assert grouped.total == pytest.approx(single.total)
    assert sum(single.hours['rl']) == pytest.approx((trqam + 8 * 3 * 10 * 100) / 3.6e6)
    assert sum(single.hours['bc']) == pytest.approx(8 * 10 * 100 / 3.6e6)
    assert [agent for agent in ('bc', 'fql', 'trqam') if any(agent in note for note in single.notes)] == ['bc', 'fql']


def test_estimate_report(tmp_path):
    table = costed_sweep(tmp_path, seeds_per_job=2)
    costs_file = tmp_path / 'costs.json'
    costs_file.write_text(json.dumps(COSTS))
    report = sweep.estimate_report(table, str(costs_file)).splitlines()
    assert 'test device' in report[0]
    assert [line.split(':')[0].strip() for line in report[1:3]] == ['seeds_per_job=1', 'seeds_per_job=2']
    assert ' 24 jobs' in report[1] and ' 12 jobs' in report[2]
    assert len(report) == 3 + 1 + len(sweep.estimate(table, COSTS).notes)  # what is not counted, and assumed
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({**COSTS, 'ms_per_update': {'fql': {'paper': 0}}}))
    for path in (bad, tmp_path / 'absent.json'):
        report = sweep.estimate_report(table, str(path))
        assert len(report.splitlines()) == 1 and path.name in report and 'device-hours' not in report


def test_check_costs_names_the_bad_key():
    sweep.check_costs(COSTS)
    cases = {'device': {key: value for key, value in COSTS.items() if key != 'device'}, 'extra': {**COSTS, 'extra': 1},
             'command': {**COSTS, 'command': 1}, 'fql': {**COSTS, 'ms_per_update': {'fql': {'paper': -1}}},
             'small': {**COSTS, 'seed_group_speedup': {'small': {'1': 2.0}}},
             'tiny': {**COSTS, 'eval_ms_per_episode': {'tiny': 'fast'}}}
    for key, costs in cases.items():
        with pytest.raises(ValueError, match=key):
            sweep.check_costs(costs)


def test_the_committed_costs_file(tmp_path):
    costs = sweep.load_costs(sweep.DEFAULT_COSTS)  # checks the schema
    assert costs['device'] and costs['command']
    for method in [METHODS[label] for label in paper_methods('trqam')] + [METHODS['BC']]:
        assert {'small', 'paper', 'large'} <= set(costs['ms_per_update'][method.slug]), method.label
    for size, row in costs['seed_group_speedup'].items():
        speedups = [row[n] for n in sorted(row, key=int)]
        assert speedups[0] == 1.0 and speedups == sorted(speedups) and len(speedups) > 1, size
    # One job (FQL, two seeds in one process, no BC stage) by hand from the file.
    table = costed_sweep(tmp_path, seeds_per_job=2, protocol='qam', methods=('FQL',), domains=('cube-double-play',),
                         seeds=(0, 1), bc_steps=None)
    (job,) = table.rl_jobs
    utd = main_flag_defaults()['utd_ratio']
    per_seed = (2000 + 1000 * utd) * costs['ms_per_update']['fql']['paper'] + \
        3 * 10 * costs['eval_ms_per_episode']['paper']
    expected = 2 * per_seed / costs['seed_group_speedup']['paper']['2'] / 3.6e6
    assert not table.bc_jobs and job.size == 'paper' and sweep.estimate(table, costs).total == pytest.approx(expected)


def test_dry_run_prints_commands_counts_and_the_estimate(tmp_path):
    costs_file = tmp_path / 'costs.json'
    costs_file.write_text(json.dumps(COSTS))
    result = subprocess.run([sys.executable, 'experiments/sweep.py', '--dry_run', '--seeds=0,1', '--domains=scene-play',
                             '--methods=TRQAM,QAM,QAM-E', '--seeds_per_job=2', f'--costs={costs_file}'],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith('python main.py') for line in lines) == 5 + 5 * 2  # QAM-E is QAM on scene
    assert '3 methods x 5 tasks x 2 seeds = 30 runs in the table' in result.stdout
    assert 'Jobs (2 seeds per main.py process): 5 BC + 10 methods = 15 jobs' in result.stdout
    assert 'measured on test device' in result.stdout and 'seeds_per_job=2: 15 jobs' in result.stdout
    assert 'seeds_per_job=1: 30 jobs' in result.stdout


# ----------------------------------------------------------------------------------------------------------------------
# Launchers.
# ----------------------------------------------------------------------------------------------------------------------


def test_slurm_scripts(tmp_path):
    table = sweep.build_sweep(sweep.resolve_spec('paper', dataset_dir=str(tmp_path), seeds=(0, 1, 2, 3), tasks=(1,),
                                                 seeds_per_job=2))
    assert len(table.bc_jobs) == 20 and len(table.rl_jobs) == 2 * (70 - 2)  # 136 jobs: 2 arrays of methods
    submit = sweep.write_slurm(table.bc_jobs, table.rl_jobs, str(tmp_path / 'slurm'), array_limit=100,
                               extra=['--account=abc'], setup=['source .venv/bin/activate'])
    files = sorted(os.listdir(tmp_path / 'slurm'))
    assert 'bc_000.sbatch' in files and 'rl_000.sbatch' in files and 'rl_001.sbatch' in files
    script = (tmp_path / 'slurm' / 'rl_001.sbatch').read_text()
    assert '#SBATCH --requeue' in script and '#SBATCH --signal=B:USR1@300' in script
    assert '#SBATCH --array=0-35' in script and '#SBATCH --account=abc' in script and 'scontrol requeue' in script
    assert f'"$STATUS" -eq {EXIT_PREEMPTED} ]' in script  # main.py's status after saving on a signal requeues
    commands = (tmp_path / 'slurm' / 'rl_000.txt').read_text().splitlines()
    assert len(commands) == 100 and all('--seeds=0,1' in c or '--seeds=2,3' in c for c in commands)
    text = open(submit).read()
    assert '--dependency=afterok$BC_IDS' in text and text.count('sbatch --parsable') == 3
    # The QAM paper's protocol: one stage.
    qam = sweep.build_sweep(sweep.resolve_spec('paper', protocol='qam', dataset_dir=str(tmp_path), seeds=(0,),
                                               tasks=(1,)))
    submit = sweep.write_slurm(qam.bc_jobs, qam.rl_jobs, str(tmp_path / 'slurm_qam'))
    text = open(submit).read()
    assert text.count('sbatch --parsable') == 1 and 'stage 1' not in text


def _fake_job(tmp_path, stage, name, code, depends_on=None, seeds=(0,)):
    run_dirs = [str(tmp_path / f'{name}_seed{seed}') for seed in seeds]
    return sweep.Job(stage, 'X', 'env', seeds, run_dirs, ['python', '-c', code], total_steps=10,
                     depends_on=depends_on, name=name)


def _finishing(job_dirs, step=10):
    return '; '.join(f"import os; os.makedirs({d!r}, exist_ok=True); "
                     f"open(os.path.join({d!r}, 'eval.csv'), 'w').write('step,x\\n{step},1\\n')" for d in job_dirs)


def test_local_launcher_runs_bc_first_and_skips_dependants_of_failures(tmp_path):
    good_bc = _fake_job(tmp_path, 'bc', 'bc_good', '', seeds=(0, 1))
    good_bc.command[-1] = _finishing(good_bc.run_dirs)
    bad_bc = _fake_job(tmp_path, 'bc', 'bc_bad', 'import sys; sys.exit(3)')
    after_good = _fake_job(tmp_path, 'rl', 'rl_good', '', good_bc.name, seeds=(0, 1))
    after_good.command[-1] = _finishing(after_good.run_dirs) + '; ' + '; '.join(
        f"assert os.path.exists({os.path.join(d, 'eval.csv')!r})" for d in good_bc.run_dirs)
    after_bad = _fake_job(tmp_path, 'rl', 'rl_bad', _finishing([str(tmp_path / 'rl_bad_seed0')]), bad_bc.name)
    status = sweep.run_local([good_bc, bad_bc], [after_good, after_bad], max_workers=2,
                             log_dir=str(tmp_path / 'logs'), log=lambda *args: None)
    assert status['bc_good'].startswith('ok') and status['rl_good'].startswith('ok')
    assert status['bc_bad'].startswith('failed with exit code 3')
    assert status['rl_bad'].startswith('skipped')
    assert not os.path.exists(after_bad.run_dirs[0])
    # A second launch skips the finished jobs; a job with one seed unfinished runs again (main.py resumes it).
    status = sweep.run_local([good_bc], [after_good], max_workers=1, log_dir=str(tmp_path / 'logs'),
                             log=lambda *args: None)
    assert set(status.values()) == {'complete'}
    os.remove(os.path.join(after_good.run_dirs[1], 'eval.csv'))
    assert not sweep.job_complete(after_good)
    status = sweep.run_local([], [after_good], max_workers=1, log_dir=str(tmp_path / 'logs'), log=lambda *args: None)
    assert status['rl_good'].startswith('ok') and sweep.job_complete(after_good)


# ----------------------------------------------------------------------------------------------------------------------
# The report: runs labelled by protocol (experiments/aggregate.py).
# ----------------------------------------------------------------------------------------------------------------------


def _write_run(root, name, method, env_name, seed, protocol, success):
    from runner import layout

    config = {**METHODS[method].default_config().to_dict(), **METHODS[method].overrides(env_name, protocol)}
    run_dir = os.path.join(root, name)
    os.makedirs(run_dir)
    flags = {'env_name': env_name, 'seed': seed, 'offline_steps': 100, 'online_steps': 50, 'bc_only': False,
             'protocol': protocol, 'agent': config}
    with open(os.path.join(run_dir, layout.FLAGS_FILE), 'w') as f:
        json.dump(flags, f, default=list)
    with open(os.path.join(run_dir, layout.EVAL_CSV), 'w') as f:
        f.write(f'step,evaluation/success\n100,{success}\n150,{success}\n')


def test_aggregate_labels_tables_by_protocol(tmp_path):
    from experiments import aggregate
    from tests.test_aggregate import cells

    root = str(tmp_path / 'runs')
    scene = 'scene-play-singletask-task1-v0'
    for protocol, success in (('trqam', 0.8), ('qam', 0.4)):
        for seed in (0, 1):
            for method in ('TRQAM', 'QAM'):
                _write_run(os.path.join(root, protocol), f'{method.lower()}_{scene}_seed{seed}', method, scene, seed,
                           protocol, success)
    reference = aggregate.load_reference()
    mixed = aggregate.success_table(aggregate.load_runs(root), bootstrap_reps=100)
    assert mixed.protocol is None and mixed.protocols == {'qam': 4, 'trqam': 4}
    text = aggregate.to_markdown(mixed, reference)
    assert '**Mixed protocols**' in text and 'pass --protocol to keep one' in text
    # Under the QAM paper's protocol QAM-E is QAM on scene (edit_scale 0): the QAM runs count for both.
    qam = aggregate.success_table(aggregate.load_runs(root, protocol='qam'), bootstrap_reps=100)
    assert qam.protocol == 'qam' and qam.per_task.loc[('QAM', scene), 'mean'] == pytest.approx(40.0)
    assert qam.per_task.loc[('QAM-E', scene), 'mean'] == pytest.approx(40.0)
    text = aggregate.to_markdown(qam, reference)
    assert 'Protocol: --protocol=qam' in text and ' / ' in text.split('| scene-play |')[1].split('\n')[0]
    assert 'TRQAM paper' not in text.split('### IQM')[0]
    trqam = aggregate.success_table(aggregate.load_runs(root, protocol='trqam'), bootstrap_reps=100)
    text = aggregate.to_markdown(trqam, reference)
    assert 'Protocol: --protocol=trqam' in text
    assert cells(text, 'all, TRQAM paper (offline, 50 tasks, 8 seeds)')[:2] == ['68', '35']  # TRQAM, QAM
    assert ' / ' not in text.split('| scene-play |')[1].split('\n')[0]  # the QAM paper's numbers are another protocol's
    assert 'Protocol: --protocol=trqam' in aggregate.to_latex(trqam, reference)
