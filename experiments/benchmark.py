"""Speed of the library on whatever device JAX sees, measured through the library's own code: the one place the
project measures it (tests never assert a time). `--mode` takes a comma-separated list of:

  updates  ms per offline update (`train_steps` on synthetic device data) per agent, network size and compute dtype.
  seeds    wall time of a small main.py run (`RUN_SETTINGS`) with N seeds in one process against N single-seed
           processes, each a fresh `main.py --protocol=none` process as a sweep's jobs are.
  eval     one evaluation in this process against one in a pool of worker processes (main.py's way).
  online   ms per step of main.py's online loop beside the environment step alone and the update alone.

    python experiments/benchmark.py                                     # updates: all agents, paper and small
    python experiments/benchmark.py --agents=fql,trqam --sizes=small --dtypes=float32,bfloat16
    python experiments/benchmark.py --mode=seeds --sizes=small --seed_counts=1,2,4 --repeats=2
    python experiments/benchmark.py --mode=eval --eval_agents=fql,trqam --episodes=50
    python experiments/benchmark.py --mode=online --sizes=small --online_steps=1000
    python experiments/benchmark.py --mode=updates,seeds,eval --out=costs.json   # the sweep's --costs=FILE

Each mode's table is printed and written to `{out_dir}/benchmark.md`, the records to `{out_dir}/benchmark.json`.
`--out=FILE` merges the costs `experiments/sweep.py --dry_run --costs=FILE` reads into FILE (one CPU's:
`experiments/reference_results/update_costs_cpu.json`). CPUs differ several-fold: `--reference_ms` adds the
authors' code timed on the same machine and the speed-up.
"""

import functools
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from absl import app, flags

if __package__ in (None, ''):  # `python experiments/benchmark.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from agents.base import COMPUTE_DTYPES  # noqa: E402
from envs.datasets import Dataset, example_batch  # noqa: E402
from envs.env_pool import EnvPool  # noqa: E402
from envs.ogbench_data import make_env  # noqa: E402
from protocols.domains import NETWORK_SIZES, dims_label, domain_name  # noqa: E402
from protocols.methods import BC, METHODS, method_by_slug  # noqa: E402
from runner import acting, layout  # noqa: E402
from runner.flags import default_flag_values  # noqa: E402
from runner.logs import read_json, write_json  # noqa: E402
from runner.prng import use_unrolled_threefry_on_cpu  # noqa: E402
from runner.seed_axis import stack  # noqa: E402
from runner.seed_group import available_cores, workers_for  # noqa: E402
from runner.training import train_steps  # noqa: E402
from experiments.sweep import check_costs, format_value  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ('updates', 'seeds', 'eval', 'online')
DEFAULT_SIZES = {'updates': ('paper', 'small'), 'seeds': ('small', 'paper'), 'eval': ('paper',), 'online': ('small', 'paper')}
HORIZON = 5
RUN_ENV = 'cube-double-play-singletask-task1-v0'
# --mode=seeds: main.py settings of the small full run at each size, and the seed counts compared.
RUN_SETTINGS = {
    'small': dict(offline_steps=3000, online_steps=1000, start_training=200, eval_episodes=5, steps_per_call=100,
                  log_interval=500),
    'paper': dict(offline_steps=100, online_steps=100, start_training=50, eval_episodes=5, steps_per_call=50,
                  log_interval=50),
    'tiny': dict(offline_steps=20, online_steps=20, start_training=10, eval_episodes=1, steps_per_call=10,
                 log_interval=10),
}
SEED_COUNTS = {'small': (1, 2, 4, 8), 'paper': (1, 2, 4), 'tiny': (1, 2)}
# --mode=online: main.py settings of each ordering of acting and updating: strictly one after the other, or the
# environments stepping while the previous update runs (main.py's default).
ORDERINGS = {'serial': {'overlap_updates': False}, 'overlapped': {'overlap_updates': True}}


def define_flags(flag_values=flags.FLAGS):
    """The command line's flags, on `flag_values`; lists of modes, sizes and dtypes are checked as they parse."""
    lists, string, integer, boolean = (functools.partial(define, flag_values=flag_values) for define in (
        flags.DEFINE_list, flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool))
    lists('mode', ['updates'], f'What to measure: {", ".join(MODES)}.')
    lists('agents', [m.slug for m in METHODS.values() if m is not BC], '--mode=updates agents (default: all but bc).')
    lists('sizes', None, f'Network sizes (default per mode: {DEFAULT_SIZES}).')
    lists('dtypes', ['float32'], f'--mode=updates compute dtypes ({", ".join(COMPUTE_DTYPES)}).')
    for name, known in (('mode', MODES), ('sizes', NETWORK_SIZES), ('dtypes', COMPUTE_DTYPES)):
        flags.register_validator(name, lambda given, known=known: set(given or ()) <= set(known),
                                 f'--{name}: each one of {", ".join(known)}.', flag_values=flag_values)
    integer('dataset_size', 1_000_000, 'Synthetic transitions on the device (--mode=updates).')
    integer('updates_per_call', 20, 'Updates per jitted train_steps call, one call per timed window.')
    integer('num_windows', 5, 'Timed windows after compilation (the median is reported).')
    integer('seed', 0, 'Seed of the agents, the synthetic data and the evaluation.')
    boolean('isolate', True, 'One process per update measurement: clean compile caches and memory.')
    boolean('stock_threefry', False, 'Updates with JAX\'s own rolled Threefry lowering on the CPU (what runner/prng.py '
            'replaces), to weigh that module.')
    lists('reference_ms', [], 'agent:size:ms or agent:size:low-high entries: the authors\' code timed here.')
    string('run_agent', 'trqam', 'The method of the main.py runs (--mode=seeds and online).')
    string('env_name', RUN_ENV, 'Environment of the main.py runs and of --mode=eval.')
    string('dataset_dir', None, 'Its dataset\'s folder (default: {out_dir}/data, generated when missing).')
    integer('data_episodes', 10, 'Episodes generated when --dataset_dir has no dataset.')
    lists('seed_counts', None, f'Seeds per process compared by --mode=seeds (default per size: {SEED_COUNTS}).')
    string('compile_cache_dir', '', 'A persistent compilation cache shared by the main.py processes.')
    lists('eval_agents', ['fql', 'trqam'], 'Agents of --mode=eval.')
    integer('episodes', 50, 'Episodes of the evaluation of --mode=eval.')
    integer('workers', -1, 'Worker processes of the pool evaluation (-1: main.py\'s rule, one per core).')
    integer('online_steps', 1000, 'Online steps of the main.py run of --mode=online.')
    lists('orderings', list(ORDERINGS), f'Orderings of --mode=online ({", ".join(ORDERINGS)}).')
    integer('repeats', 1, 'Repeats of --mode=seeds and eval, in alternating order (medians).')
    string('out_dir', 'runs/benchmark', 'Where benchmark.json and benchmark.md go.')
    string('out', None, 'Costs JSON for experiments/sweep.py --costs=FILE (updated if it exists).')
    return flag_values


# --mode=updates.
def size_settings(method, size: str) -> dict:
    """The method's fixed settings and the size's network: the keys of them that its config has."""
    config = method.default_config()
    return {key: value for key, value in {**method.fixed, **NETWORK_SIZES[size]}.items() if key in config}


def agent_config(slug: str, size: str, dtype: str = 'float32'):
    """The config of method `slug` (its fixed settings included) at network `size`, matrix products in `dtype`."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f'Compute dtype {dtype!r}: one of {", ".join(COMPUTE_DTYPES)}.')
    method = method_by_slug(slug)
    config = method.default_config()
    with config.unlocked():
        config.update(size_settings(method, size), horizon_length=HORIZON, compute_dtype=dtype)
    return config


def synthetic_transitions(size: int, obs_dim: int = 40, action_dim: int = 5, seed: int = 0):
    """Random transitions in the main.py dataset format, with an episode boundary every 400-600 steps."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((size + 1, obs_dim), dtype=np.float32)
    ends = np.cumsum(rng.integers(400, 601, size // 400 + 1)) - 1
    terminals = np.zeros(size, np.float32)
    terminals[ends[ends < size - 1]] = 1.0
    terminals[-1] = 1.0
    return {'observations': observations[:-1], 'actions': rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
            'rewards': -(rng.random(size) < 0.9).astype(np.float32), 'masks': np.ones(size, np.float32),
            'terminals': terminals, 'next_observations': observations[1:]}


def create_agent(slug: str, size: str, dataset, dtype: str = 'float32', seed: int = 0):
    config = agent_config(slug, size, dtype)
    agent = method_by_slug(slug).agent_class().create(seed, example_batch(dataset, HORIZON), config)
    return jax.tree_util.tree_map(jax.numpy.asarray, agent), config


def time_updates(agent, dataset, batch_size: int, updates_per_call: int, num_windows: int, seed: int = 0):
    """`train_steps` compiled ahead of time, run once, then timed: (compile s, ms/update per call, last metrics)."""
    data_key = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = train_steps.lower(agent, dataset, data_key, 1, num_updates=updates_per_call, batch_size=batch_size,
                                 horizon_length=HORIZON).compile()
    compile_s = time.perf_counter() - start
    window_ms = []
    for window in range(num_windows + 1):  # the first call warms up
        start = time.perf_counter()
        agent, info = jax.block_until_ready(compiled(agent, dataset, data_key, 1 + window * updates_per_call))
        window_ms.append(1000 * (time.perf_counter() - start) / updates_per_call)
    return compile_s, window_ms[1:], jax.device_get(info)


def measure_updates(slug, size, dataset, dtype='float32', updates_per_call=20, num_windows=5, seed=0) -> dict:
    """The updates record of one agent at one size and dtype on the device `dataset`."""
    agent, config = create_agent(slug, size, dataset, dtype, seed)
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(agent.network.params))
    compile_s, window_ms, info = time_updates(agent, dataset, config.batch_size, updates_per_call, num_windows, seed)
    return {'agent': slug, 'size': size, 'network': dims_label(config.actor_hidden_dims), 'compute_dtype': dtype,
            'status': 'ok', 'ms_per_update': np.median(window_ms), 'window_ms': window_ms,
            'compile_s': compile_s, 'num_params': num_params, 'updates_per_call': updates_per_call,
            'dataset_size': int(dataset.size), 'platform': jax.devices()[0].platform,
            'metrics_finite': all(bool(np.all(np.isfinite(value))) for value in info.values())}


def measure_isolated(slug, size, dtype, dataset_size, updates_per_call, num_windows, seed, stock_threefry) -> dict:
    """`measure_updates` in a fresh process of this program."""
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, 'experiments/benchmark.py', '--mode=updates', f'--agents={slug}', f'--sizes={size}',
                   f'--dtypes={dtype}', f'--dataset_size={dataset_size}', f'--updates_per_call={updates_per_call}',
                   f'--num_windows={num_windows}', f'--seed={seed}', '--noisolate', f'--out_dir={out_dir}',
                   f'--{"" if stock_threefry else "no"}stock_threefry']
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f'worker exited with {result.returncode}: {result.stderr.strip()[-1500:]}')
        return read_json(os.path.join(out_dir, 'benchmark.json'))['updates'][0]


def parse_references(entries) -> dict:
    """--reference_ms entries `agent:size:ms` or `agent:size:low-high` -> {(agent, size): (low, high)}."""
    references = {}
    for entry in entries or ():
        try:
            slug, size, value = entry.split(':')
            low, _, high = value.partition('-')
            references[(slug, size)] = (float(low), float(high or low))
        except ValueError:
            raise ValueError(f'--reference_ms entry {entry!r} is not agent:size:ms or agent:size:low-high.') from None
    return references


def run_benchmarks(agents, sizes, dataset_size=1_000_000, updates_per_call=20, num_windows=5, isolate=False, seed=0,
                   log=print, references=None, dtypes=('float32',), stock_threefry=False) -> list:
    """The updates record of every (size, agent, dtype); a failed one has status 'error' and a note. The
    references ({(agent, size): (low, high)} float32 ms/update) add the speed-up reference / ours."""
    for slug in agents:
        method_by_slug(slug)  # an unknown slug raises before anything is measured
    if not stock_threefry:
        use_unrolled_threefry_on_cpu()
    dataset = None if isolate else Dataset.create(synthetic_transitions(dataset_size, seed=seed))
    records = []
    for size, slug, dtype in itertools.product(sizes, agents, dtypes):
        log(f'[benchmark] {slug} at size {size}, {dtype} ...')
        settings = (updates_per_call, num_windows, seed)
        try:
            record = (measure_isolated(slug, size, dtype, dataset_size, *settings, stock_threefry) if isolate
                      else measure_updates(slug, size, dataset, dtype, *settings))
        except Exception as error:  # noqa: BLE001 - report it and measure the next one
            record = {'agent': slug, 'size': size, 'compute_dtype': dtype, 'status': 'error',
                      'note': f'{type(error).__name__}: {error}'}
        if record['status'] == 'ok' and dtype == 'float32' and (slug, size) in (references or {}):
            (low, high), ms = references[(slug, size)], record['ms_per_update']  # the authors' code is float32
            record['reference_ms'] = f'{low:g}' if low == high else f'{low:g}-{high:g}'
            record['speedup'] = f'{low / ms:.2f}x' if low == high else f'{low / ms:.2f}-{high / ms:.2f}x'
        log(f'[benchmark]   {record["ms_per_update"]:.3f} ms/update' if 'ms_per_update' in record else record['note'])
        records.append(record)
    return records


# main.py processes (--mode=seeds and online).
def main_command(slug, size, seeds, save_dir, dataset_dir, settings, env_name=RUN_ENV) -> list:
    """main.py with --protocol=none and the run explicit: the method's fixed settings, the size's network
    and `settings` (main.py flags) over main.py's defaults."""
    method = method_by_slug(slug)
    run = dict(env_name=env_name, protocol='none', seeds=','.join(map(str, seeds)), dataset_dir=dataset_dir,
               save_dir=save_dir, horizon_length=HORIZON, utd_ratio=1, eval_interval=0, save_interval=0, sparse=False,
               bc_steps=0, wandb_mode='disabled', **settings)
    unknown = sorted(set(run) - set(default_flag_values()))
    if unknown:
        raise ValueError(f'{unknown} are not main.py flags.')
    return ([sys.executable, 'main.py', f'--agent={method.agent_file}']
            + [f'--agent.{key}={format_value(value)}' for key, value in size_settings(method, size).items()]
            + [f'--{name}={format_value(value)}' for name, value in run.items()])


def child_environment(compile_cache_dir: str = '') -> dict:
    """A main.py process's environment: no persistent compilation cache (a sweep's jobs each compile) unless asked."""
    env = {key: value for key, value in os.environ.items() if key != 'JAX_COMPILATION_CACHE_DIR'}
    env['JAX_ENABLE_COMPILATION_CACHE'] = 'true' if compile_cache_dir else 'false'
    if compile_cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=compile_cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # accelerators: each process takes what it uses
    return env


def run_main(command, env, log=print):
    """Wall seconds of one main.py process, None (its error logged) when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        log(f'[benchmark] FAILED ({result.returncode}): {shlex.join(command)}\n{result.stderr.strip()[-1500:]}')
        return None
    return time.perf_counter() - start


def ensure_dataset(dataset_dir: str, env_name: str, episodes: int, log=print) -> str:
    """`dataset_dir`, with the environment's dataset generated there when missing."""
    data_env = f'{domain_name(env_name)}-v0'
    if not os.path.exists(os.path.join(dataset_dir, f'{data_env}.npz')):
        from experiments.generate_dataset import generate

        log(f'[benchmark] generating {episodes} episodes of {data_env} into {dataset_dir} ...')
        generate(data_env, num_episodes=episodes, dataset_dir=dataset_dir, seed=0, num_val_episodes=1,
                 progress=False, verbose=False)
    return dataset_dir


def seeds_benchmark(sizes, slug, dataset_dir, env_name=RUN_ENV, work_dir=None, seed_counts=None, repeats=1,
                    compile_cache_dir='', log=print) -> list:
    """Per size and N: one main.py process with seeds 0..N-1 against the single-seed processes of seeds 0..N-1.
    Each repeat runs the single-seed processes, then the N-seed ones; every other repeat in reverse order."""
    work_dir, env = work_dir or tempfile.mkdtemp(prefix='benchmark_seeds_'), child_environment(compile_cache_dir)
    records = []
    for size in sizes:
        counts = sorted(seed_counts or SEED_COUNTS[size])
        processes = {f'single{seed}': [seed] for seed in range(max(counts))}
        processes.update({f'group{n}': list(range(n)) for n in counts if n > 1})
        walls = pd.DataFrame(index=range(repeats), columns=list(processes), dtype=float)  # NaN: the process failed
        for repeat in range(repeats):
            for name in (list(processes) if repeat % 2 == 0 else list(processes)[::-1]):
                log(f'[benchmark] seeds {size}, repeat {repeat}: {name} ...')
                command = main_command(slug, size, processes[name], os.path.join(work_dir, size, f'{repeat}_{name}'),
                                       dataset_dir, RUN_SETTINGS[size], env_name)
                walls.loc[repeat, name] = run_main(command, env, log)
        records += [seed_row(size, n, walls) for n in counts]
    return records


def seed_row(size: str, n: int, walls: pd.DataFrame) -> dict:
    """Medians over the repeats in which all its processes ran: one N-seed process's wall, N single-seed
    processes' summed, their ratio and the N-seed wall over one seed's."""
    one_process = walls[f'group{n}' if n > 1 else 'single0']
    n_processes = walls[[f'single{seed}' for seed in range(n)]].sum(axis=1, min_count=n)
    ran = one_process.notna() & n_processes.notna()
    frame = pd.DataFrame({'one_process_s': one_process, 'n_processes_s': n_processes,
                          'speedup': n_processes / one_process, 'vs_one_seed': one_process / walls['single0']})[ran]
    medians = frame.median().to_dict() if ran.any() else dict.fromkeys(frame)
    return {'size': size, 'seeds': n, **medians, 'repeats': int(ran.sum())}


# --mode=eval and online: environments.
def env_dims(env_name: str):
    """(observation dtype, observation dim, action dim) of the environment."""
    env = make_env(env_name)
    observation, _ = env.reset(seed=0)
    dims = observation.dtype, observation.shape[-1], env.action_space.shape[-1]
    env.close()
    return dims


def eval_benchmark(agents, sizes, env_name=RUN_ENV, episodes=50, workers=-1, eval_envs=None, repeats=1, seed=0,
                   log=print) -> list:
    """Per agent and size: `acting.evaluate` of `episodes` episodes with main.py's --eval_envs environments in
    this process ('in_process') and in a pool of worker processes ('pool'), the pools started beforehand (a run
    starts its evaluation pool once)."""
    use_unrolled_threefry_on_cpu()
    num_envs = acting.evaluation_slots(1, episodes, eval_envs or default_flag_values()['eval_envs'])
    factory = functools.partial(make_env, env_name)
    dtype, obs_dim, action_dim = env_dims(env_name)
    example = Dataset.create(synthetic_transitions(64, obs_dim, action_dim, seed))
    pool_workers = workers_for(num_envs, workers)
    with EnvPool(factory, num_envs, 0) as in_process, EnvPool(factory, num_envs, pool_workers) as pool:
        pools, records = {'in_process': in_process, 'pool': pool}, []
        for size, slug in itertools.product(sizes, agents):
            log(f'[benchmark] eval {slug} at size {size}: {episodes} episodes in {num_envs} environments ...')
            agents_stacked = stack([create_agent(slug, size, example, seed=seed)[0]])
            jax.block_until_ready(acting.sample_episode_chunks(  # compiled before timing, as a run's first evaluation
                agents_stacked, np.zeros((1, num_envs, obs_dim), dtype), np.zeros((1, num_envs, 2), np.uint32),
                np.zeros((1, num_envs), np.int32)))
            seconds, results = {way: [] for way in pools}, {}
            for repeat in range(repeats):
                for way in (list(pools) if repeat % 2 == 0 else list(pools)[::-1]):
                    start = time.perf_counter()
                    (results[way],) = acting.evaluate(agents_stacked, pools[way], [seed], episodes, 0, HORIZON)
                    seconds[way].append(time.perf_counter() - start)
            in_process_s, pool_s = (np.median(seconds[way]) for way in pools)
            records.append({'agent': slug, 'size': size, 'episodes': episodes, 'envs': num_envs,
                            'workers': len(pool.workers), 'in_process_s': in_process_s, 'pool_s': pool_s,
                            'speedup': in_process_s / pool_s, 'ms_per_episode': 1000 * pool_s / episodes,
                            'same_results': all(np.array_equal(results['pool'][key], values)
                                                for key, values in results['in_process'].items()),
                            'success': float(np.mean(results['pool']['success']))})
    return records


def env_step_ms(env_name: str, action_dim: int, steps: int = 1000, seed: int = 0) -> float:
    """ms per step of random actions in main.py's online pool of one seed (`workers_for(1)` processes)."""
    rng = np.random.default_rng(seed)
    with EnvPool(functools.partial(make_env, env_name), 1, workers_for(1)) as pool:
        pool.reset({0: seed})
        start = time.perf_counter()
        for step in range(steps):
            if pool.step({0: rng.uniform(-1, 1, action_dim).astype(np.float32)})[0].done:
                pool.reset({0: seed + step + 1})
        return 1000 * (time.perf_counter() - start) / steps


def online_steps_per_second(run_dir: str) -> float:
    """Median `time/steps_per_second` of the run's online rows but the first (compilation, start-up)."""
    rows = pd.read_csv(os.path.join(run_dir, layout.TRAIN_CSV))
    rates = rows.loc[rows['phase'] == 'online', 'time/steps_per_second'].dropna()
    if len(rates) < 2:
        raise ValueError(f'{run_dir}: {len(rates)} online rows; the online rate needs two or more.')
    return float(rates.iloc[1:].median())


def online_settings(online_steps: int) -> dict:
    """main.py settings of the --mode=online run: a few offline steps, then `online_steps` with five log rows."""
    log_interval = max(2, online_steps // 5)
    return dict(offline_steps=10, steps_per_call=10, online_steps=online_steps, log_interval=log_interval,
                start_training=max(1, min(50, log_interval // 2)), eval_episodes=1)


def online_benchmark(sizes, slug, dataset_dir, env_name=RUN_ENV, work_dir=None, online_steps=1000,
                     orderings=tuple(ORDERINGS), seed=0, compile_cache_dir='', log=print) -> list:
    """Per size and ordering: ms per online step of main.py's loop against the environment step alone and the
    update alone (`train_steps`, one update per call, on synthetic data of the environment's shapes)."""
    work_dir = work_dir or tempfile.mkdtemp(prefix='benchmark_online_')
    use_unrolled_threefry_on_cpu()
    _, obs_dim, action_dim = env_dims(env_name)
    env_ms = env_step_ms(env_name, action_dim, min(online_steps, 1000), seed)
    dataset = Dataset.create(synthetic_transitions(10_000, obs_dim, action_dim, seed))
    records = []
    for size in sizes:
        agent, config = create_agent(slug, size, dataset, seed=seed)
        update_ms = np.median(time_updates(agent, dataset, config.batch_size, 1, 50, seed)[1])
        for ordering in orderings:
            log(f'[benchmark] online {slug} at size {size}, {ordering}: {online_steps} steps ...')
            save_dir = os.path.join(work_dir, size, ordering)
            command = main_command(slug, size, [seed], save_dir, dataset_dir,
                                   {**online_settings(online_steps), **ORDERINGS[ordering]}, env_name)
            loop_ms = float('nan')
            if run_main(command, child_environment(compile_cache_dir), log) is not None:
                loop_ms = 1000 / online_steps_per_second(os.path.join(save_dir, layout.run_name(slug, env_name, seed)))
            bound_ms = max(env_ms, update_ms)
            records.append({'agent': slug, 'size': size, 'ordering': ordering, 'loop_ms_per_step': loop_ms,
                            'env_ms_per_step': env_ms, 'update_ms': update_ms, 'bound_ms': bound_ms,
                            'sum_ms': env_ms + update_ms, 'bound_over_loop': bound_ms / loop_ms})
    serial_ms = {record['size']: record['loop_ms_per_step'] for record in records if record['ordering'] == 'serial'}
    for record in records:  # each ordering's steps per second over the serial loop's, from the same run
        record['speedup_over_serial'] = serial_ms.get(record['size'], float('nan')) / record['loop_ms_per_step']
    return records


# Output: tables, benchmark.json and the costs file (experiments/sweep.py --costs=FILE).
# The columns of the updates table, in order (those that any record has); the other modes' tables show their records.
UPDATES_COLUMNS = ('agent', 'size', 'network', 'compute_dtype', 'ms_per_update', 'compile_s', 'num_params',
                   'reference_ms', 'speedup', 'status', 'note')


def markdown_table(frame: pd.DataFrame) -> str:
    """`frame` as a Markdown table: numbers to 4 significant digits, missing values as empty cells."""
    cells = frame.map(lambda value: '' if pd.isna(value) else f'{value:.4g}' if isinstance(value, float)
                      else str(value))
    lines = ['| ' + ' | '.join(map(str, row)) + ' |' for row in [list(frame.columns), *cells.values.tolist()]]
    return '\n'.join([lines[0], '|' + '---|' * len(frame.columns), *lines[1:]]) + '\n'


def mode_table(mode: str, records) -> str:
    """The Markdown table of one mode's records."""
    frame = pd.DataFrame(records)
    return markdown_table((frame[[key for key in UPDATES_COLUMNS if key in frame]] if mode == 'updates' else frame)
                          .astype(object))


def write_outputs(results: dict, out_dir: str, command: str = ''):
    """`{out_dir}/benchmark.json` ({mode: records, 'command'}) and `benchmark.md` (a table per mode)."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, md_path = os.path.join(out_dir, 'benchmark.json'), os.path.join(out_dir, 'benchmark.md')
    with open(json_path, 'w') as f:
        json.dump({**results, 'command': command}, f, indent=2, default=str)
    with open(md_path, 'w') as f:
        f.write('\n'.join(f'## {mode}\n\n{mode_table(mode, records)}' for mode, records in results.items()))
    return json_path, md_path


def device_name() -> str:
    device = jax.devices()[0]
    if device.platform != 'cpu':
        return f'{device.platform}: {device.device_kind}'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        cpu = 'unknown'
    return f'cpu: {cpu} ({available_cores()} cores)'


def costs_from(results: dict, device: str, command: str) -> dict:
    """The costs schema (`sweep.check_costs`) from the modes' records: float32 updates, the seed-group speed-ups
    and the pool evaluation's ms per episode averaged over agents."""
    ms, speedups = {}, {}
    for r in results.get('updates', ()):
        if r['status'] == 'ok' and r['compute_dtype'] == 'float32':
            ms.setdefault(r['agent'], {})[r['size']] = r['ms_per_update']
    for r in results.get('seeds', ()):
        if r['speedup'] is not None:
            speedups.setdefault(r['size'], {})[str(r['seeds'])] = r['speedup']
    per_episode = pd.DataFrame(results.get('eval', []), columns=['size', 'ms_per_episode'])
    return {'device': device, 'command': command, 'ms_per_update': ms, 'seed_group_speedup': speedups,
            'eval_ms_per_episode': per_episode.groupby('size')['ms_per_episode'].mean().to_dict()}


def write_costs(path: str, costs: dict) -> dict:
    """Writes `costs` whole to `path`, checked, over the costs there when they were measured on the same device."""
    old = read_json(path) if os.path.exists(path) else {}
    if old.get('device') == costs['device']:  # the measured entries replace theirs
        commands = [command for command in old.get('command', '').split(' ; ') + [costs['command']] if command]
        costs = {**costs, 'command': ' ; '.join(dict.fromkeys(commands)),
                 'eval_ms_per_episode': {**old.get('eval_ms_per_episode', {}), **costs['eval_ms_per_episode']}}
        for key in ('ms_per_update', 'seed_group_speedup'):
            older, newer = old.get(key, {}), costs[key]
            costs[key] = {name: {**older.get(name, {}), **newer.get(name, {})} for name in {**older, **newer}}
    check_costs(costs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(path, costs)
    return costs


# Command line.
def run_mode(mode: str, values, log=print) -> list:
    """The records of one mode, with the settings of the parsed flags `values`."""
    sizes = list(values.sizes or DEFAULT_SIZES[mode])
    if mode == 'updates':
        return run_benchmarks(values.agents, sizes, values.dataset_size, values.updates_per_call, values.num_windows,
                              values.isolate, values.seed, log, parse_references(values.reference_ms), values.dtypes,
                              values.stock_threefry)
    if mode == 'eval':
        return eval_benchmark(values.eval_agents, sizes, values.env_name, values.episodes, values.workers,
                              repeats=values.repeats, seed=values.seed, log=log)
    dataset_dir = os.path.abspath(values.dataset_dir or ensure_dataset(
        os.path.join(values.out_dir, 'data'), values.env_name, values.data_episodes, log))
    work_dir = os.path.abspath(os.path.join(values.out_dir, f'{mode}_runs', time.strftime('%Y%m%d-%H%M%S')))
    if mode == 'seeds':
        counts = [int(n) for n in values.seed_counts or ()]  # none: the size's SEED_COUNTS
        return seeds_benchmark(sizes, values.run_agent, dataset_dir, values.env_name, work_dir, counts, values.repeats,
                               values.compile_cache_dir, log)
    return online_benchmark(sizes, values.run_agent, dataset_dir, values.env_name, work_dir, values.online_steps,
                            values.orderings, values.seed, values.compile_cache_dir, log)


def main(_):
    values = flags.FLAGS
    command = shlex.join(['python', 'experiments/benchmark.py', *sys.argv[1:]])
    results = {mode: run_mode(mode, values) for mode in dict.fromkeys(values.mode)}
    for mode, records in results.items():
        print(f'\n## {mode}\n\n{mode_table(mode, records)}', flush=True)
    json_path, md_path = write_outputs(results, values.out_dir, command)
    if values.out:
        costs = write_costs(values.out, costs_from(results, device_name(), command))
        print(f'Wrote the costs to {values.out}: {json.dumps(costs)}')
    print(f'Wrote {json_path} and {md_path}.')


if __name__ == '__main__':
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # room for the main.py processes on a GPU
    define_flags()
    app.run(main)
