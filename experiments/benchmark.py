"""Speed of the library, on whatever device JAX sees: the one place the project measures it (tests never
assert a time). Three measurements (`--mode`, comma-separated):

  updates  ms per offline update of every agent (`runner.training.train_steps`), per compute dtype.
  seeds    wall time of a small full main.py run (offline, online, two evaluations) with N seeds in ONE
           process (`--seeds=0,..,N-1`) against N single-seed processes one after another.
  eval     one evaluation of 50 episodes: in parallel (`runner.acting.evaluate`, worker processes, one
           batched policy call per chunk step) against one episode at a time in this process.

    python experiments/benchmark.py                                     # updates: all agents, paper and small
    python experiments/benchmark.py --agents=fql,trqam --sizes=small --dtypes=float32,bfloat16
    python experiments/benchmark.py --mode=seeds --sizes=small --repeats=2
    python experiments/benchmark.py --mode=eval --eval_agents=fql,trqam
    python experiments/benchmark.py --mode=updates,seeds,eval --out=costs.json   # the sweep's --costs=FILE

updates: each (agent, size, dtype) runs `train_steps` with `--updates_per_call` updates per call on a
synthetic device dataset (`--dataset_size` transitions, observations 40-d, actions 5-d, chunks of 5,
episodes of 400-600 steps). The call is compiled ahead of time (its time is the compile time, its
`memory_analysis` the compiled program's memory), then `--num_windows` windows of `--calls_per_window`
calls are timed; the median window gives updates/s. Peak memory is the process's peak RSS and, on
accelerators, the device's `peak_bytes_in_use`. With `--isolate` (the default) every measurement runs in
its own process. `--dtypes=float32,bfloat16` measures `--agent.compute_dtype` (matrix products in
bfloat16, parameters and losses in float32) and prints the CPU's bf16 flags (avx512_bf16, amx_bf16,
avx512f) and what XLA compiles a bfloat16 matrix product to.

seeds: subprocesses of main.py with --protocol=none and explicit flags (`--run_agent`, the size's network,
`RUN_SETTINGS`' steps), each in a fresh save_dir, the persistent compilation cache off (every process
compiles, as every job of a sweep does; `--compile_cache_dir=DIR` shares one instead). Per repeat, the
single-seed processes of seeds 0..max(N)-1 and the N-seed processes (N > 1) run one after another,
interleaved, in alternating order; "N processes" is the sum of the single-seed processes of seeds
0..N-1 (N = 1: the same process for both ways). Compilation is included in the wall time (a sweep pays it).

eval: cube-double (`--eval_env`) with an untrained agent at each size, `--eval_ways`: sequential (the code
before the redesign: one environment, reset with the episode's seed, `agent.sample_actions(observation,
fold_in(key, t))` per chunk), batched (`runner.acting.evaluate` with the environments in this process) and
pool (`runner.acting.evaluate` on an EnvPool of `--eval_workers` processes: main.py's way, the "parallel"
figure). Every way must give the same success, return and length per episode; where float rounding of the
batched policy call differs (reported), the simulation can amplify it over an episode.

Agents are named by their method's slug (`protocols.methods.METHODS`: trqam, qam, qam-e, ...). Writes
`{out_dir}/benchmark.json` and `{out_dir}/benchmark.md`, and with `--out=FILE` the measured costs for
`experiments/sweep.py --costs=FILE`:

    {"device": str, "command": str, "ms_per_update": {agent: {size: ms}},
     "seed_group_speedup": {size: {"1": 1.0, "2": x, "4": y, "8": z}},   # N processes' wall / one N-seed process's
     "eval_ms_per_episode": {size: ms}}

(float32 updates; the eval figure is the parallel way's, averaged over the measured agents). An existing
FILE measured on the same device is updated, not replaced, so the modes can be measured one at a time.

CPUs differ several-fold on these workloads (AVX-512 or not, clock, memory), so a speed-up is only
meaningful against the authors' code timed on the same machine: pass its ms/update and the table adds
the speed-up (reference / ours):

    python experiments/benchmark.py --agents=fql,qam --reference_ms=fql:small:3.6,qam:small:8.6
"""

import collections
import contextlib
import functools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ''):  # `python experiments/benchmark.py` from the repository root.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZES = {
    'paper': {'actor_hidden_dims': (512, 512, 512, 512), 'value_hidden_dims': (512, 512, 512, 512), 'num_qs': 10,
              'batch_size': 256},
    'small': {'actor_hidden_dims': (64, 64), 'value_hidden_dims': (64, 64), 'num_qs': 2, 'batch_size': 64},
    'tiny': {'actor_hidden_dims': (16, 16), 'value_hidden_dims': (16, 16), 'num_qs': 2, 'batch_size': 8},  # tests
    # The large-data domains' networks under the trqam protocol (protocols/domains.py); not in the default sizes.
    'large': {'actor_hidden_dims': (1024,) * 4, 'value_hidden_dims': (1024,) * 4, 'num_qs': 10, 'batch_size': 256,
              'actor_layer_norm': True},
}
OBS_DIM, ACTION_DIM, HORIZON = 40, 5, 5
MODES = ('updates', 'seeds', 'eval')
DEFAULT_SIZES = {'updates': ('paper', 'small'), 'seeds': ('small', 'paper'), 'eval': ('paper',)}
DTYPES = ('float32', 'bfloat16')
CPU_BF16_FLAGS = ('avx512_bf16', 'amx_bf16', 'avx512f')

# --mode=seeds: the small full run of main.py at each size (steps, evaluation episodes, seed counts).
RUN_ENV = 'cube-double-play-singletask-task1-v0'
RUN_DATA_ENV = 'cube-double-play-v0'
RUN_SETTINGS = {
    'small': dict(offline_steps=3000, online_steps=1000, start_training=200, eval_episodes=5, steps_per_call=100,
                  log_interval=500, seed_counts=(1, 2, 4, 8)),
    'paper': dict(offline_steps=100, online_steps=100, start_training=50, eval_episodes=5, steps_per_call=50,
                  log_interval=50, seed_counts=(1, 2, 4)),
    'tiny': dict(offline_steps=20, online_steps=20, start_training=10, eval_episodes=1, steps_per_call=10,
                 log_interval=10, seed_counts=(1, 2)),
}


def synthetic_transitions(size: int, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM, seed: int = 0,
                          episode_length=(400, 600)):
    """Random transitions in the main.py dataset format, with episode boundaries every 400-600 steps."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((size + 1, obs_dim), dtype=np.float32)
    terminals = np.zeros(size, np.float32)
    end = -1
    while True:
        end += int(rng.integers(episode_length[0], episode_length[1] + 1))
        if end >= size - 1:
            break
        terminals[end] = 1.0
    terminals[-1] = 1.0
    return {
        'observations': observations[:-1],
        'actions': rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
        'rewards': -(rng.random(size) < 0.9).astype(np.float32),
        'masks': np.ones(size, np.float32),
        'terminals': terminals,
        'next_observations': observations[1:],
    }


def benchmark_names():
    """Every registered method but the BC pre-training, by slug: the default agents."""
    from protocols.methods import BC, METHODS

    return [method.slug for method in METHODS.values() if method is not BC]


def known_names():
    """Every slug --agents accepts: the methods and the BC pre-training's."""
    from protocols.methods import BC

    return benchmark_names() + [BC.slug]


def agent_config(name: str, size: str, dtype: str = 'float32'):
    """The config of benchmark agent `name` (a method's slug) at `size` with matrix products in `dtype`."""
    from protocols.methods import method_by_slug

    config = method_by_slug(name).default_config()
    if 'compute_dtype' not in config and dtype != 'float32':
        raise ValueError(f'The {name} config has no compute_dtype key: --agent.compute_dtype={dtype} is not '
                         'available in this version of the agents.')
    with config.unlocked():
        for key, value in {**SIZES[size], 'horizon_length': HORIZON, 'compute_dtype': dtype}.items():
            if key in config:
                config[key] = value
    return config


def _max_rss_mb() -> float:
    scale = 1024 * 1024 if sys.platform == 'darwin' else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


class CpuMeter:
    """How much CPU the machine spent during a measurement, and how much of it was not ours: on a shared
    machine a parallel speed-up needs idle cores. `stop(own_seconds)` -> {'wall_s', 'busy_cores' (all
    processes, from /proc/stat), 'own_cores', 'other_cores'}, in cores on average over the wall time."""

    def __init__(self):
        self.start_wall, self.start_busy = time.perf_counter(), self.busy_seconds()

    @staticmethod
    def busy_seconds():
        """CPU seconds the machine spent busy since boot (None off Linux)."""
        try:
            with open('/proc/stat') as f:
                fields = [int(value) for value in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')

    @staticmethod
    def process_seconds(pid) -> float:
        """User + system CPU seconds of process `pid` so far (0 when it is gone)."""
        try:
            with open(f'/proc/{pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
        except (OSError, ValueError, IndexError):
            return 0.0

    def stop(self, own_seconds: float) -> dict:
        wall = time.perf_counter() - self.start_wall
        busy = self.busy_seconds()
        if busy is None or self.start_busy is None or wall <= 0:
            return {'wall_s': wall, 'busy_cores': None, 'own_cores': own_seconds / max(wall, 1e-9),
                    'other_cores': None}
        busy_cores = (busy - self.start_busy) / wall
        own_cores = own_seconds / wall
        return {'wall_s': wall, 'busy_cores': busy_cores, 'own_cores': own_cores,
                'other_cores': max(busy_cores - own_cores, 0.0)}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_references(entries) -> dict:
    """`agent:size:ms` or `agent:size:low-high` entries (--reference_ms) -> {(agent, size): (low, high)}.

    CPUs differ several-fold on these workloads, so the fair comparison is the authors' code timed on the
    same machine; these entries replace the table's numbers for that run.
    """
    references = {}
    for entry in entries or ():
        try:
            name, size, value = entry.split(':')
            low, _, high = value.partition('-')
            references[(name, size)] = (float(low), float(high or low))
        except ValueError:
            raise ValueError(f'--reference_ms entry {entry!r} is not agent:size:ms or agent:size:low-high '
                             '(e.g. fql:small:3.6 or trqam:paper:692-735).') from None
    return references


def attach_reference(record: dict, references: dict) -> dict:
    """Sets the reference ms/update of `record` and its speed-up (reference / ours); references are float32."""
    reference = references.get((record['agent'], record['size']))
    if record.get('compute_dtype', 'float32') != 'float32':
        reference = None
    ms = record['ms_per_update']
    record['reference_ms_per_update'] = list(reference) if reference else None
    record['speedup_vs_reference'] = [reference[0] / ms, reference[1] / ms] if reference else None
    return record


def parse_modes(modes) -> list:
    modes = [mode.strip() for mode in ([modes] if isinstance(modes, str) else modes) for mode in mode.split(',')]
    modes = [mode for mode in modes if mode]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        raise ValueError(f'--mode {",".join(modes) or "(empty)"}: each mode must be one of {", ".join(MODES)}.')
    return list(dict.fromkeys(modes))


def parse_dtypes(dtypes) -> list:
    unknown = [dtype for dtype in dtypes if dtype not in DTYPES]
    if unknown or not dtypes:
        raise ValueError(f'--dtypes {",".join(dtypes)}: each must be one of {", ".join(DTYPES)}.')
    return list(dict.fromkeys(dtypes))


def parse_seed_counts(entries) -> dict:
    """`--seed_counts` entries: `1,2,4` (every size) or `small:1/2/4/8,paper:1/2` -> {size or None: (N, ...)}."""
    counts = {}
    for entry in entries or ():
        size, _, values = entry.rpartition(':')
        try:
            numbers = tuple(int(value) for value in values.split('/'))
        except ValueError:
            raise ValueError(f'--seed_counts entry {entry!r} is not N or size:N/N/...') from None
        if any(n < 1 for n in numbers):
            raise ValueError(f'--seed_counts entry {entry!r}: seed counts are positive.')
        counts.setdefault(size or None, ())
        counts[size or None] = tuple(sorted(set(counts[size or None] + numbers)))
    return counts


def summary(values) -> dict:
    """Median and range of repeated measurements."""
    values = [float(value) for value in values if value is not None]
    if not values:
        return {'median': None, 'min': None, 'max': None, 'n': 0}
    return {'median': statistics.median(values), 'min': min(values), 'max': max(values), 'n': len(values)}


def format_summary(stats: dict, digits: int = 1, unit: str = '') -> str:
    if not stats or stats.get('median') is None:
        return ''
    median = f'{stats["median"]:.{digits}f}{unit}'
    if stats['n'] < 2 or stats['min'] == stats['max']:
        return median
    return f'{median} ({stats["min"]:.{digits}f}-{stats["max"]:.{digits}f})'


# ----------------------------------------------------------------------------------------------------------------------
# The CPU and what XLA makes of bfloat16.
# ----------------------------------------------------------------------------------------------------------------------


def cpu_flags(path: str = '/proc/cpuinfo') -> dict:
    """Whether the CPU has each of CPU_BF16_FLAGS ({} off Linux)."""
    try:
        with open(path) as f:
            flags = next((set(line.split(':', 1)[1].split()) for line in f if line.startswith('flags')), set())
    except OSError:
        return {}
    return {flag: flag in flags for flag in CPU_BF16_FLAGS}


def xla_bf16_probe(rows: int = 256, width: int = 512, repeats: int = 30) -> dict:
    """What XLA compiles a (rows x width) @ (width x width) product with bfloat16 operands to on this device,
    with the training step's compiler options (a dot kept in bf16, or converts to f32 around an f32 dot),
    and its time against the float32 one."""
    import jax
    import jax.numpy as jnp

    from runner.training import TRAIN_COMPILER_OPTIONS

    def product(x, w):
        return x @ w

    result = {}
    for dtype in ('float32', 'bfloat16'):
        x = jnp.ones((rows, width), dtype)
        w = jnp.ones((width, width), dtype)
        # Compiled as the training step is (its XLA:CPU options).
        compiled = jax.jit(product, compiler_options=TRAIN_COMPILER_OPTIONS).lower(x, w).compile()
        text = compiled.as_text() or ''
        if dtype == 'bfloat16':
            dots = [line for line in text.splitlines() if ' dot(' in line or 'custom-call' in line
                    or 'onednn' in line.lower() or 'ynn' in line.lower()]
            result['bf16_hlo_ops'] = [line.strip()[:160] for line in dots][:4]
            result['bf16_dot_kept_in_bf16'] = any(line.split('=', 1)[-1].strip().startswith('bf16') and ' dot(' in line
                                                  for line in dots) or any('bf16' in line and 'custom-call' in line
                                                                           for line in dots)
            result['bf16_converts_to_f32'] = 'convert(' in text and 'f32[' in text
        jax.block_until_ready(compiled(x, w))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(x, w))
            times.append(time.perf_counter() - start)
        result[f'{dtype}_ms'] = 1000 * statistics.median(times)
    result['shape'] = [rows, width, width]
    result['bf16_speedup'] = result['float32_ms'] / result['bfloat16_ms']
    return result


def describe_bf16(flags: dict, probe: dict, ratios: dict) -> str:
    """One paragraph: the CPU's flags, what XLA compiles a bf16 product to, and the measured gain."""
    import jax

    have = [flag for flag, present in flags.items() if present]
    lacks = [flag for flag, present in flags.items() if not present]
    text = (f'CPU bf16 flags: {", ".join(have) or "none"} present'
            f'{"; " + ", ".join(lacks) + " absent" if lacks else ""} (/proc/cpuinfo). ')
    if probe:
        kept = probe.get('bf16_dot_kept_in_bf16')
        text += (f'XLA ({jax.devices()[0].platform}, jax {jax.__version__}) compiles a bf16 '
                 f'{probe["shape"][0]}x{probe["shape"][1]} @ {probe["shape"][1]}x{probe["shape"][2]} product '
                 f'{"as a bf16 dot" if kept else "by converting to f32 around an f32 dot"}: '
                 f'{probe["float32_ms"]:.3f} ms in float32, {probe["bfloat16_ms"]:.3f} ms in bfloat16 '
                 f'({probe["bf16_speedup"]:.2f}x). ')
    if ratios:
        parts = [f'{agent} {size} {ratio:.2f}x' for (agent, size), ratio in sorted(ratios.items())]
        values = list(ratios.values())
        verdict = ('a gain' if min(values) > 1.1 else 'no gain' if max(values) < 1.1 and min(values) > 0.9
                   else 'a loss' if max(values) < 0.9 else 'mixed results')
        text += f'Whole updates, float32 time / bfloat16 time: {", ".join(parts)}: {verdict} on this machine.'
    return text.strip()


# ----------------------------------------------------------------------------------------------------------------------
# --mode=updates
# ----------------------------------------------------------------------------------------------------------------------


def benchmark_one(name: str, size: str, dataset, updates_per_call: int = 20, num_windows: int = 5,
                  calls_per_window: int = 1, seed: int = 0, dtype: str = 'float32') -> dict:
    """Measures one agent at one size on the device `dataset` (a envs.datasets.Dataset)."""
    import jax

    from protocols.methods import get_agent_class
    from envs.datasets import example_batch
    from runner.prng import use_unrolled_threefry_on_cpu
    from runner.training import train_steps

    use_unrolled_threefry_on_cpu()
    config = agent_config(name, size, dtype)
    rss_before = _max_rss_mb()
    agent = get_agent_class(config.agent_name).create(seed, example_batch(dataset, HORIZON), config)
    agent = jax.tree_util.tree_map(jax.numpy.asarray, agent)
    data_key = jax.random.PRNGKey(seed)
    step = 1

    start = time.perf_counter()
    compiled = train_steps.lower(agent, dataset, data_key, step, num_updates=updates_per_call,
                                 batch_size=config.batch_size, horizon_length=HORIZON).compile()
    compile_s = time.perf_counter() - start
    memory = _compiled_memory(compiled)

    def call():
        nonlocal agent, step
        agent, info = compiled(agent, dataset, data_key, step)
        step += updates_per_call
        return info

    start = time.perf_counter()
    jax.block_until_ready(call())
    first_call = compile_s + time.perf_counter() - start
    windows = []
    for _ in range(num_windows):
        start = time.perf_counter()
        for _ in range(calls_per_window):
            info = call()
        jax.block_until_ready((agent, info))
        windows.append(calls_per_window * updates_per_call / (time.perf_counter() - start))
    updates_per_second = statistics.median(windows)
    ms = 1000.0 / updates_per_second
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    finite = all(bool(np.all(np.isfinite(np.asarray(value)))) for value in jax.device_get(info).values())
    params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(agent.network.params))
    record = {
        'agent': name,
        'size': size,
        'compute_dtype': dtype,
        'status': 'ok',
        **{key: list(value) if isinstance(value, tuple) else value for key, value in SIZES[size].items()},
        'updates_per_call': updates_per_call,
        'dataset_size': int(dataset.size),
        'updates_per_second': updates_per_second,
        'ms_per_update': ms,
        'window_updates_per_second': windows,
        'first_call_s': first_call,
        'compile_s': compile_s,
        'num_params': params,
        'compiled_memory_mb': memory,
        'peak_rss_mb': _max_rss_mb(),
        'rss_increase_mb': _max_rss_mb() - rss_before,
        'device_peak_bytes': (stats or {}).get('peak_bytes_in_use'),
        'metrics_finite': finite,
        **environment_info(),
    }
    return record


def _compiled_memory(compiled):
    """The compiled program's memory (MB): arguments, outputs, aliased (donated) and temporaries."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if analysis is None:
        return None
    fields = {'arguments': 'argument_size_in_bytes', 'outputs': 'output_size_in_bytes',
              'aliased': 'alias_size_in_bytes', 'temporaries': 'temp_size_in_bytes'}
    memory = {name: getattr(analysis, field, 0) / 2**20 for name, field in fields.items()}
    memory['total'] = memory['arguments'] + memory['outputs'] - memory['aliased'] + memory['temporaries']
    return memory


def environment_info() -> dict:
    import jax

    device = jax.devices()[0]
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'platform': device.platform, 'device_kind': device.device_kind, 'num_devices': jax.device_count(),
            'cpu': cpu, 'cpu_count': os.cpu_count(), 'jax_version': jax.__version__}


def run_benchmarks(agents, sizes, dataset_size=1_000_000, updates_per_call=20, num_windows=5, calls_per_window=1,
                   isolate=False, seed=0, log=print, references=None, dtypes=('float32',)):
    """Benchmarks every (agent, size, dtype); returns the records (failed ones with status 'error').

    `references` ({(agent, size): (low, high)} ms/update): the authors' code timed on this machine.
    Sizes outermost, then dtypes, then agents: a dtype's records of one size are measured back to back.
    """
    references = references or {}
    dtypes = parse_dtypes(list(dtypes))
    unknown = [name for name in agents if name not in known_names()]
    if unknown:
        raise ValueError(f'Unknown benchmark agents {unknown}; known: {", ".join(known_names())}.')
    records, dataset = [], None
    for size in sizes:
        if size not in SIZES:
            raise ValueError(f'Unknown size {size!r}; known: {", ".join(SIZES)}.')
        for name in agents:
            for dtype in dtypes:
                log(f'[benchmark] {name} at size {size}, {dtype} ...')
                try:
                    if isolate:
                        record = _run_isolated(name, size, dataset_size, updates_per_call, num_windows,
                                               calls_per_window, seed, dtype)
                    else:
                        if dataset is None:
                            from envs.datasets import Dataset

                            dataset = Dataset.create(synthetic_transitions(dataset_size, seed=seed))
                        record = benchmark_one(name, size, dataset, updates_per_call, num_windows, calls_per_window,
                                               seed, dtype)
                except Exception as error:  # noqa: BLE001 - report and continue with the next agent
                    record = {'agent': name, 'size': size, 'compute_dtype': dtype, 'status': 'error',
                              'note': f'{type(error).__name__}: {error}'}
                if record['status'] == 'ok':
                    attach_reference(record, references)
                    log(f'[benchmark] {name} {size} {dtype}: {record["ms_per_update"]:.2f} ms/update, '
                        f'compile {record["compile_s"]:.1f}s, peak RSS {record["peak_rss_mb"]:.0f} MB')
                else:
                    log(f'[benchmark] {name} {size} {dtype}: {record["status"]}: {record.get("note", "")}')
                records.append(record)
    return records


def _run_isolated(name, size, dataset_size, updates_per_call, num_windows, calls_per_window, seed, dtype='float32'):
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, os.path.join(REPO_ROOT, 'experiments', 'benchmark.py'), '--mode=updates',
                   f'--agents={name}', f'--sizes={size}', f'--dtypes={dtype}', f'--dataset_size={dataset_size}',
                   f'--updates_per_call={updates_per_call}', f'--num_windows={num_windows}',
                   f'--calls_per_window={calls_per_window}', f'--seed={seed}', '--noisolate', f'--out_dir={out_dir}',
                   '--quiet', '--noprint_gpu_plan']
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        path = os.path.join(out_dir, 'benchmark.json')
        if result.returncode != 0 or not os.path.exists(path):
            return {'agent': name, 'size': size, 'compute_dtype': dtype, 'status': 'error',
                    'note': f'worker exited with {result.returncode}: {result.stderr.strip()[-1500:]}'}
        with open(path) as f:
            (record,) = [r for r in json.load(f)['records'] if r.get('size') == size]
        return record


def bf16_ratios(records) -> dict:
    """{(agent, size): float32 ms / bfloat16 ms} where both were measured."""
    ms = {(r['agent'], r['size'], r.get('compute_dtype', 'float32')): r['ms_per_update'] for r in records
          if r['status'] == 'ok'}
    return {(agent, size): value / ms[(agent, size, 'bfloat16')] for (agent, size, dtype), value in ms.items()
            if dtype == 'float32' and (agent, size, 'bfloat16') in ms}


# ----------------------------------------------------------------------------------------------------------------------
# Markdown.
# ----------------------------------------------------------------------------------------------------------------------


def _format_reference(record):
    reference = record.get('reference_ms_per_update')
    if not reference:
        return '', ''
    low, high = reference
    speedup = record['speedup_vs_reference']
    if low == high:
        return f'{low:g}', f'{speedup[0]:.2f}x'
    return f'{low:g}-{high:g}', f'{speedup[0]:.2f}-{speedup[1]:.2f}x'


def to_markdown(records, title='Training speed') -> str:
    ok = [r for r in records if r['status'] == 'ok']
    lines = [f'## {title}', '']
    if ok:
        r = ok[0]
        lines += [f'Device: {r["platform"]} ({r["device_kind"]}, {r["num_devices"]} device(s)); CPU: {r["cpu"]} '
                  f'({r["cpu_count"]} cores); jax {r["jax_version"]}. {r["updates_per_call"]} updates per jitted call, '
                  f'{r["dataset_size"]:,} synthetic transitions, chunk {HORIZON}.', '']
    lines += ['| agent | size | dtype | updates/s | ms/update | compile (s) | peak RSS (MB) | device peak (MB) | '
              'compiled program (MB) | reference ms/update (authors, this CPU) | speed-up (reference / ours) |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in ok:
        reference, speedup = _format_reference(r)
        device_peak = f'{r["device_peak_bytes"] / 2**20:.0f}' if r.get('device_peak_bytes') else ''
        program = f'{r["compiled_memory_mb"]["total"]:.0f}' if r.get('compiled_memory_mb') else ''
        lines.append(f'| {r["agent"]} | {r["size"]} | {r.get("compute_dtype", "float32")} | '
                     f'{r["updates_per_second"]:.1f} | {r["ms_per_update"]:.2f} | {r["compile_s"]:.1f} | '
                     f'{r["peak_rss_mb"]:.0f} | {device_peak} | {program} | {reference} | {speedup} |')
    sizes = {size: SIZES[size] for size in dict.fromkeys(r['size'] for r in ok)}
    if sizes:
        lines += ['', 'Sizes: ' + '; '.join(
            f'{name} = actor/critic {list(s["actor_hidden_dims"])}, {s["num_qs"]} critics, batch {s["batch_size"]}'
            for name, s in sizes.items()) + '.']
    ratios = bf16_ratios(records)
    if ratios:
        ms = {(r['agent'], r['size'], r.get('compute_dtype', 'float32')): r['ms_per_update'] for r in ok}
        lines += ['', '| agent | size | float32 ms/update | bfloat16 ms/update | float32 / bfloat16 |',
                  '|---|---|---|---|---|']
        lines += [f'| {agent} | {size} | {ms[(agent, size, "float32")]:.2f} | {ms[(agent, size, "bfloat16")]:.2f} | '
                  f'{ratio:.2f}x |' for (agent, size), ratio in ratios.items()]
    others = [r for r in records if r['status'] != 'ok']
    if others:
        lines += ['', 'Not measured:'] + [f'- {r["agent"]} {r.get("size", "")} {r.get("compute_dtype", "")}: '
                                          f'{r["status"]}: {r.get("note", "")}' for r in others]
    return '\n'.join(lines) + '\n'


def seeds_markdown(result: dict) -> str:
    """The --mode=seeds table: per size and N, one N-seed process against N single-seed processes."""
    lines = ['## Several seeds in one process', '',
             f'main.py runs of {result["agent"]} on {result["env_name"]} (--protocol=none), compilation included, '
             f'{result["repeats"]} repeat(s), medians (ranges); persistent compilation cache '
             f'{result["compile_cache"] or "off"}. "N processes" is N single-seed processes one after another.', '',
             '| size | steps (offline + online), eval episodes | N | one process, N seeds (s) | N processes (s) | '
             'N processes / one process | one N-seed process / one 1-seed process | '
             'other processes\' CPU use (cores) |',
             '|---|---|---|---|---|---|---|---|']
    for size, table in result['sizes'].items():
        settings = table['settings']
        steps = f'{settings["offline_steps"]} + {settings["online_steps"]}, {settings["eval_episodes"]} x 2'
        for n, row in table['rows'].items():
            lines.append(f'| {size} | {steps} | {n} | {format_summary(row["group_wall_s"])} | '
                         f'{format_summary(row["separate_wall_s"])} | {format_summary(row["speedup"], 2, "x")} | '
                         f'{format_summary(row["group_vs_one_seed"], 2, "x")} | '
                         f'{format_summary(row["other_cores"], 2)} |')
    lines += [f'\n{size}: {table["target"]}' for size, table in result['sizes'].items() if table.get('target')]
    lines += ['\nFailed processes:'] + [f'- {failure}' for failure in result['failures']] if result['failures'] else []
    return '\n'.join(lines) + '\n'


def eval_markdown(records) -> str:
    ok = [r for r in records if r['status'] == 'ok']
    lines = ['## Evaluation: parallel against one episode at a time', '']
    if ok:
        r = ok[0]
        lines += [f'{r["env_name"]}, {r["episodes"]} episodes of an untrained agent in {r["envs"]} environments '
                  f'(main.py\'s --eval_envs), {r["workers"]} worker process(es) for the pools, {r["repeats"]} '
                  'interleaved repeat(s), medians (ranges). Policy calls are compiled '
                  'before timing; the pools are started once (as a run starts its evaluation pool once). One '
                  f'environment step in this process: {r["env_step_ms"]:.2f} ms. Ways:', '']
        lines += [f'- {way}: {EVAL_WAY_NAMES[way]}' for way in r['ways']]
        starts = ', '.join(f'{way} {seconds:.1f} s' for way, seconds in r['pool_start_s'].items())
        if starts:
            lines += ['', f'Pool start-up (not in the times): {starts}.']
        lines += ['']
    lines += ['| agent | size | way | seconds | speed-up vs sequential | ms/episode | policy calls (s) | '
              'environments incl. IPC (s) | cores used: ours | cores used: other processes | '
              'same success/return/length as sequential |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
    notes = []
    for r in records:
        if r['status'] != 'ok':
            lines.append(f'| {r["agent"]} | {r["size"]} | | {r["status"]}: {r.get("note", "")} | | | | | |')
            continue
        if r.get('ideal_pool_speedup'):
            notes.append(f'{r["agent"]} {r["size"]}: with {r["workers"]} idle cores the pool could at best be '
                         f'{r["ideal_pool_speedup"]:.2f}x faster than sequential (the sequential environment time '
                         'split over the workers, plus the batched policy calls, no IPC).')
        if not r['same_results'] and r.get('first_chunk_max_difference') is not None:
            notes.append(f'{r["agent"]} {r["size"]}: the first chunks of the episodes, one policy call each against '
                         f'one batched call, differ by at most {r["first_chunk_max_difference"]:.2g} (float32 '
                         'rounding: the products sum in another order at another shape); the simulation amplifies '
                         'that over an episode.')
        for way in r['ways']:
            difference = r['differences'][way]
            lines.append(f'| {r["agent"]} | {r["size"]} | {way} | {format_summary(r["seconds"][way])} | '
                         f'{format_summary(r["speedup_vs_sequential"][way], 2, "x")} | '
                         f'{r["ms_per_episode"][way]:.0f} | {r["policy_s"][way]:.1f} | {r["env_s"][way]:.1f} | '
                         f'{format_summary(r.get("own_cores", {}).get(way), 2)} | '
                         f'{format_summary(r.get("other_cores", {}).get(way), 2)} | '
                         f'{"yes" if not difference else "NO: " + difference} |')
    if notes:
        lines += [''] + notes
    return '\n'.join(lines) + '\n'


def write_outputs(records, out_dir, extra=None, markdown_parts=()):
    """`{out_dir}/benchmark.json` ({'records': the update records, **extra}) and benchmark.md."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, 'benchmark.json')
    with open(json_path, 'w') as f:
        json.dump({'records': records, **(extra or {})}, f, indent=2, default=str)
    md_path = os.path.join(out_dir, 'benchmark.md')
    with open(md_path, 'w') as f:
        f.write('\n'.join(([to_markdown(records)] if records else []) + list(markdown_parts)))
    return json_path, md_path


# ----------------------------------------------------------------------------------------------------------------------
# The costs file (experiments/sweep.py --costs=FILE).
# ----------------------------------------------------------------------------------------------------------------------

COSTS_KEYS = ('device', 'command', 'ms_per_update', 'seed_group_speedup', 'eval_ms_per_episode')


def device_name() -> str:
    import jax

    from runner.seed_group import available_cores

    device = jax.devices()[0]
    if device.platform == 'cpu':
        info = environment_info()
        return f'cpu: {info["cpu"]} ({available_cores()} cores)'
    return f'{device.platform}: {device.device_kind}'


def costs_from(update_records, seeds_result, eval_records, device: str, command: str) -> dict:
    """The costs schema: float32 ms/update per agent and size, N processes' wall / one N-seed process's
    per size and N (medians), the parallel evaluation's ms per episode per size (mean over agents)."""
    ms = {}
    for r in update_records or ():
        if r['status'] == 'ok' and r.get('compute_dtype', 'float32') == 'float32':
            ms.setdefault(r['agent'], {})[r['size']] = r['ms_per_update']
    speedups = {}
    for size, table in ((seeds_result or {}).get('sizes') or {}).items():
        row = {}
        for n, values in table['rows'].items():
            value = 1.0 if int(n) == 1 else (values['speedup'] or {}).get('median')
            if value is not None:
                row[str(n)] = value
        if row:
            speedups[size] = row
    per_episode = collections.defaultdict(list)
    for r in eval_records or ():
        if r['status'] == 'ok':
            per_episode[r['size']].append(r['parallel_ms_per_episode'])
    return {'device': device, 'command': command, 'ms_per_update': ms, 'seed_group_speedup': speedups,
            'eval_ms_per_episode': {size: float(np.mean(values)) for size, values in per_episode.items()}}


def merge_costs(old: dict, new: dict) -> dict:
    """`new` over `old` (the same device): every measured entry replaces the old one, the rest stays."""
    if not old or old.get('device') != new['device']:
        return new
    merged = {'device': new['device']}
    commands = [c for c in (old.get('command') or '').split(' ; ') + [new['command']] if c]
    merged['command'] = ' ; '.join(dict.fromkeys(commands))
    for key in ('ms_per_update', 'seed_group_speedup'):
        merged[key] = {name: dict(values) for name, values in (old.get(key) or {}).items()}
        for name, values in new[key].items():
            merged[key].setdefault(name, {}).update(values)
    merged['eval_ms_per_episode'] = {**(old.get('eval_ms_per_episode') or {}), **new['eval_ms_per_episode']}
    return merged


def check_costs(costs: dict):
    """Raises ValueError unless `costs` follows the schema exactly."""
    if set(costs) != set(COSTS_KEYS):
        raise ValueError(f'costs keys {sorted(costs)} != {sorted(COSTS_KEYS)}')
    if not isinstance(costs['device'], str) or not isinstance(costs['command'], str):
        raise ValueError('device and command are strings')
    for agent, sizes in costs['ms_per_update'].items():
        if not isinstance(sizes, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in sizes.values()):
            raise ValueError(f'ms_per_update[{agent!r}] is not {{size: ms}}')
    for size, row in costs['seed_group_speedup'].items():
        if not all(isinstance(n, str) and n.isdigit() and isinstance(v, (int, float)) for n, v in row.items()):
            raise ValueError(f'seed_group_speedup[{size!r}] is not {{"N": speed-up}}')
        if '1' in row and row['1'] != 1.0:
            raise ValueError('seed_group_speedup["1"] is 1.0 by definition')
    if not all(isinstance(v, (int, float)) and v > 0 for v in costs['eval_ms_per_episode'].values()):
        raise ValueError('eval_ms_per_episode is not {size: ms}')


def write_costs(path: str, costs: dict) -> dict:
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
    costs = merge_costs(old, costs)
    check_costs(costs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(costs, f, indent=2)
    os.replace(path + '.tmp', path)
    return costs


# ----------------------------------------------------------------------------------------------------------------------
# --mode=seeds: main.py processes.
# ----------------------------------------------------------------------------------------------------------------------


def run_settings(size: str, offline_steps=None, online_steps=None, eval_episodes=None, seed_counts=None) -> dict:
    settings = dict(RUN_SETTINGS[size])
    for key, value in (('offline_steps', offline_steps), ('online_steps', online_steps),
                       ('eval_episodes', eval_episodes)):
        if value is not None:
            settings[key] = value
    if seed_counts:
        counts = seed_counts.get(size) or seed_counts.get(None)
        if counts:
            settings['seed_counts'] = tuple(counts)
    settings['start_training'] = min(settings['start_training'], max(settings['online_steps'] // 2, 1))
    return settings


def main_command(agent: str, size: str, seeds, save_dir: str, dataset_dir: str, settings: dict,
                 env_name: str = RUN_ENV) -> list:
    """The main.py command of one run: --protocol=none and every setting explicit."""
    from protocols.methods import method_by_slug

    method = method_by_slug(agent)
    agent_flags = [f'--agent={method.agent_file}']
    for key, value in {**method.fixed, **SIZES[size]}.items():
        value = f'({",".join(map(str, value))},)' if isinstance(value, tuple) else value
        agent_flags.append(f'--agent.{key}={value}')
    flags = [f'--env_name={env_name}', '--protocol=none', f'--seeds={",".join(map(str, seeds))}',
             f'--dataset_dir={dataset_dir}', f'--save_dir={save_dir}', '--horizon_length=5',
             f'--offline_steps={settings["offline_steps"]}', f'--online_steps={settings["online_steps"]}',
             f'--start_training={settings["start_training"]}', '--utd_ratio=1',
             f'--steps_per_call={settings["steps_per_call"]}', f'--log_interval={settings["log_interval"]}',
             '--eval_interval=0', f'--eval_episodes={settings["eval_episodes"]}', '--eval_workers=-1',
             '--save_interval=0', '--wandb_mode=disabled', '--sparse=false', '--bc_steps=0']
    return [sys.executable, 'main.py'] + agent_flags + flags


def child_environment(compile_cache_dir: str = '') -> dict:
    """The environment of a main.py process: no persistent compilation cache (every job of a sweep compiles)
    unless one is asked for."""
    env = {key: value for key, value in os.environ.items() if key != 'JAX_COMPILATION_CACHE_DIR'}
    if compile_cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=compile_cache_dir, JAX_ENABLE_COMPILATION_CACHE='true',
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
    else:
        env['JAX_ENABLE_COMPILATION_CACHE'] = 'false'
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # GPUs: each process takes what it uses
    return env


def run_main_process(command, env, log=print, timeout=None) -> dict:
    """Runs one main.py command: its wall time and the CPU other processes used meanwhile."""
    children_before, meter = children_cpu_seconds(), CpuMeter()
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    cpu = meter.stop(children_cpu_seconds() - children_before)
    record = {'wall_s': wall, 'returncode': result.returncode, 'command': shlex.join(command),
              'own_cores': cpu['own_cores'], 'other_cores': cpu['other_cores']}
    if result.returncode != 0:
        record['error'] = result.stderr.strip()[-3000:]
        log(f'[benchmark] FAILED ({result.returncode}): {shlex.join(command)}\n{record["error"][-1500:]}')
    return record


def interleaved_schedule(counts, repeat: int) -> list:
    """One repeat's processes: ('single', seed) for seeds 0..max(N)-1 and ('group', N) for N > 1, spread
    evenly among each other; every other repeat in reverse order."""
    singles = [('single', seed) for seed in range(max(counts))]
    groups = [('group', n) for n in sorted(counts) if n > 1]
    order, i, j = [], 0, 0
    total = len(singles) + len(groups)
    for position in range(total):
        # Place the next group when it is due by proportion, so groups are spread over the singles.
        if j < len(groups) and (i >= len(singles) or (j + 0.5) * total / len(groups) <= position + 0.5):
            order.append(groups[j])
            j += 1
        else:
            order.append(singles[i])
            i += 1
    return order if repeat % 2 == 0 else order[::-1]


def ensure_run_dataset(dataset_dir: str, episodes: int, log=print) -> str:
    """cube-double-play data for the runs: `dataset_dir` if it has it, else generated there."""
    path = os.path.join(dataset_dir, f'{RUN_DATA_ENV}.npz')
    if not os.path.exists(path):
        from experiments.generate_dataset import generate

        log(f'[benchmark] generating {episodes} episodes of {RUN_DATA_ENV} into {dataset_dir} ...')
        generate(RUN_DATA_ENV, num_episodes=episodes, dataset_dir=dataset_dir, seed=0, num_val_episodes=1,
                 progress=False, verbose=False)
    return dataset_dir


def seeds_benchmark(sizes, agent='trqam', dataset_dir=None, env_name=RUN_ENV, repeats=1, work_dir=None,
                    compile_cache_dir='', log=print, overrides=None, seed_counts=None, timeout=None) -> dict:
    """Per size and N: one main.py process with N seeds against N single-seed processes (see the module
    docstring). Returns {'sizes': {size: {'settings', 'rows': {N: summaries}, 'runs': [...]}}, ...}."""
    work_dir = work_dir or tempfile.mkdtemp(prefix='benchmark_seeds_')
    env = child_environment(compile_cache_dir)
    result = {'agent': agent, 'env_name': env_name, 'repeats': repeats, 'compile_cache': compile_cache_dir or None,
              'sizes': {}, 'failures': []}
    for size in sizes:
        settings = run_settings(size, seed_counts=seed_counts, **(overrides or {}))
        counts = sorted(settings['seed_counts'])
        runs = []
        for repeat in range(repeats):
            for way, value in interleaved_schedule(counts, repeat):
                seeds = [value] if way == 'single' else list(range(value))
                save_dir = os.path.join(work_dir, size, f'repeat{repeat}', f'{way}{value}')
                log(f'[benchmark] seeds {size} repeat {repeat}: {way} {"seed" if way == "single" else "N ="} '
                    f'{value} ...')
                record = run_main_process(main_command(agent, size, seeds, save_dir, dataset_dir, settings, env_name),
                                          env, log, timeout)
                record.update(way=way, seeds=seeds, repeat=repeat, size=size)
                log(f'[benchmark]   {record["wall_s"]:.1f} s')
                if record['returncode'] != 0:
                    result['failures'].append(f'{size} {way} {value} (repeat {repeat}): exit {record["returncode"]}')
                runs.append(record)
        result['sizes'][size] = {'settings': {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
                                 'rows': summarize_seed_runs(runs, counts, repeats), 'runs': runs}
        result['sizes'][size]['target'] = seeds_target(size, result['sizes'][size]['rows'])
    return result


def summarize_seed_runs(runs, counts, repeats) -> dict:
    """{N: medians/ranges over repeats of the one-process and N-process wall times and their ratios}."""
    by_key = {(r['repeat'], r['way'], tuple(r['seeds'])): r for r in runs if r['returncode'] == 0}

    def group(repeat, n):
        return by_key.get((repeat, 'single', (0,))) if n == 1 else by_key.get((repeat, 'group', tuple(range(n))))

    def singles(repeat, n):
        parts = [by_key.get((repeat, 'single', (seed,))) for seed in range(n)]
        return None if any(p is None for p in parts) else parts

    rows = {}
    for n in counts:
        group_wall, separate_wall, ratio, vs_one, others = [], [], [], [], []
        for repeat in range(repeats):
            g, s, one = group(repeat, n), singles(repeat, n), group(repeat, 1)
            others += [r['other_cores'] for r in [g] + (s or []) if r is not None and r['other_cores'] is not None]
            if g is not None:
                group_wall.append(g['wall_s'])
            if s is not None:
                separate_wall.append(sum(p['wall_s'] for p in s))
            if g is not None and s is not None:
                ratio.append(separate_wall[-1] / g['wall_s'])
            if g is not None and one is not None:
                vs_one.append(g['wall_s'] / one['wall_s'])
        rows[n] = {'group_wall_s': summary(group_wall), 'separate_wall_s': summary(separate_wall),
                   'speedup': summary(ratio), 'group_vs_one_seed': summary(vs_one), 'other_cores': summary(others)}
    return rows


def seeds_target(size: str, rows: dict):
    """The issue's target at the small size: 4 seeds in one process in at most 2x one seed's wall time."""
    if size != 'small' or 4 not in rows or rows[4]['group_vs_one_seed']['median'] is None:
        return None
    value = rows[4]['group_vs_one_seed']['median']
    return (f'4 seeds in one process took {value:.2f}x the wall time of one seed (target: at most 2x): '
            f'{"met" if value <= 2.0 else "missed"}.')


# ----------------------------------------------------------------------------------------------------------------------
# --mode=eval
# ----------------------------------------------------------------------------------------------------------------------


def sequential_evaluate(agent, env, seed: int, num_episodes: int, round_index: int, horizon_length: int):
    """The evaluation before the redesign: one episode at a time in this process, reset with the episode's
    seed, `agent.sample_actions(observation, fold_in(key, t))` at each chunk start. Returns (metrics, policy
    seconds, environment seconds)."""
    import jax

    from runner.acting import EVAL_ACTIONS, EVAL_RESETS, episode_seed

    action_dim = env.action_space.shape[-1]
    successes, returns, lengths = [], [], []
    policy_s = env_s = 0.0
    for episode in range(num_episodes):
        key = jax.random.PRNGKey(episode_seed(seed, EVAL_ACTIONS + round_index, episode))
        start = time.perf_counter()
        observation, info = env.reset(seed=episode_seed(seed, EVAL_RESETS + round_index, episode))
        env_s += time.perf_counter() - start
        done, total, length, queue = False, 0.0, 0, []
        while not done:
            if length % horizon_length == 0:
                start = time.perf_counter()
                chunk = np.asarray(agent.sample_actions(observation, jax.random.fold_in(key, length)))
                policy_s += time.perf_counter() - start
                queue = list(chunk.reshape(-1, action_dim))
            start = time.perf_counter()
            observation, reward, terminated, truncated, info = env.step(queue.pop(0))
            env_s += time.perf_counter() - start
            done = terminated or truncated
            total += float(reward)
            length += 1
        successes.append(float(info.get('success', 0.0)))
        returns.append(total)
        lengths.append(length)
    metrics = {'success': np.array(successes), 'episode_return': np.array(returns), 'episode_length': np.array(lengths)}
    return metrics, policy_s, env_s


def compare_metrics(a: dict, b: dict) -> str:
    """'' when two evaluations agree (per episode when both have per-episode arrays, else their means),
    else what differs."""
    differences = []
    for key in ('success', 'episode_return', 'episode_length'):
        x, y = np.asarray(a[key], np.float64), np.asarray(b[key], np.float64)
        if x.shape != y.shape:
            x, y = np.mean(x), np.mean(y)
        if not np.array_equal(x, y):
            where = np.flatnonzero(np.atleast_1d(x != y))
            differences.append(f'{key}: {np.size(where)} episode(s) differ, means {np.mean(x):.4f} vs '
                               f'{np.mean(y):.4f}, largest difference {np.max(np.abs(x - y)):.4g}')
    return '; '.join(differences)


def mean_metrics(metrics: dict) -> dict:
    return {key: float(np.mean(value)) for key, value in metrics.items()}


EVAL_WAYS = ('sequential', 'batched', 'pool')
EVAL_WAY_NAMES = {
    'sequential': 'one episode at a time in this process, one policy call per chunk (the code before the redesign)',
    'batched': '`runner.acting.evaluate` with the environments in this process (--eval_workers=0)',
    'pool': '`runner.acting.evaluate` on an EnvPool of worker processes (main.py\'s way)',
}


def main_defaults() -> dict:
    """main.py's flag defaults, read in a fresh process (its flags would clash with this program's)."""
    script = 'import json, main; print(json.dumps(main.default_flag_values(), default=str))'
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, 'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu')})
    if result.returncode != 0:
        raise RuntimeError(f'Could not read main.py\'s flags: {result.stderr[-1500:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def _timed_parallel_parts(pool):
    """Seconds in the batched policy calls and in the pool's steps/resets during `runner.acting.evaluate`."""
    from runner import acting

    totals = {'policy': 0.0, 'env': 0.0}
    original_sample, original_play, original_reset = acting.sample_episode_chunks, pool.play, pool.reset

    def add(part, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = function(*args, **kwargs)
            if part == 'policy':
                import jax

                jax.block_until_ready(out)
            totals[part] += time.perf_counter() - start
            return out
        return timed

    acting.sample_episode_chunks = add('policy', original_sample)
    pool.play, pool.reset = add('env', original_play), add('env', original_reset)
    try:
        yield totals
    finally:
        acting.sample_episode_chunks = original_sample
        del pool.play, pool.reset


def eval_benchmark(agents, sizes, env_name=RUN_ENV, episodes=50, workers=-1, repeats=1, seed=0, round_index=0,
                   log=print, ways=EVAL_WAYS, eval_envs=16) -> list:
    """Per agent and size: one evaluation of `episodes` episodes in each of `ways` (EVAL_WAYS), interleaved
    (the order turns every repeat); all must give the same per-episode success, return and length.
    `eval_envs`: main.py's --eval_envs."""
    from runner.acting import evaluation_slots
    from envs.datasets import Dataset, example_batch
    from envs.env_pool import EnvPool
    from envs.ogbench_data import make_env
    from runner.prng import use_unrolled_threefry_on_cpu
    from runner.seed_group import workers_for

    use_unrolled_threefry_on_cpu()
    unknown = [way for way in ways if way not in EVAL_WAYS]
    if unknown or 'sequential' not in ways:
        raise ValueError(f'Evaluation ways {list(ways)}: each of {", ".join(EVAL_WAYS)}, with sequential.')
    num_envs = evaluation_slots(1, episodes, eval_envs)
    workers = workers_for(num_envs, workers)  # main.py's rule
    factory = functools.partial(make_env, env_name)
    env = factory()
    obs_dim, action_dim = env.observation_space.shape[-1], env.action_space.shape[-1]
    start = time.perf_counter()
    env.reset(seed=0)
    steps = 200
    for _ in range(steps):
        env.step(np.zeros(action_dim, np.float32))
    env_step_ms = 1000 * (time.perf_counter() - start) / steps
    example = example_batch(Dataset.create(synthetic_transitions(64, obs_dim, action_dim, seed)), HORIZON)
    # The pools live across agents, as in a run (started once, at its first evaluation).
    pools, pool_start = {}, {}
    try:
        for way, pool_workers in (('batched', 0), ('pool', workers)):
            if way in ways and (pool_workers > 0 or way == 'batched'):
                start = time.perf_counter()
                pools[way] = EnvPool(factory, num_envs, pool_workers)
                pool_start[way] = time.perf_counter() - start
        records = []
        for size in sizes:
            for name in agents:
                log(f'[benchmark] eval {name} at size {size}: {episodes} episodes in {num_envs} environments ...')
                record = _eval_one(name, size, env, pools, ways, episodes, num_envs, repeats, seed, round_index,
                                   obs_dim, example, log)
                record.update(env_name=env_name, workers=workers, pool_start_s=pool_start, env_step_ms=env_step_ms)
                records.append(record)
    finally:
        for pool in pools.values():
            pool.close()
        env.close()
    return records


def _eval_one(name, size, env, pools, ways, episodes, num_envs, repeats, seed, round_index, obs_dim, example, log):
    import jax

    from protocols.methods import get_agent_class
    from runner import acting
    from runner.seed_axis import stack

    try:
        config = agent_config(name, size)
        agent = get_agent_class(config.agent_name).create(seed, example, config)
        agent = jax.tree_util.tree_map(jax.numpy.asarray, agent)
        stacked = stack([agent])
        # Compile both policy calls before timing (a run compiles each once).
        observation, _ = env.reset(seed=0)
        jax.block_until_ready(agent.sample_actions(observation, jax.random.PRNGKey(0)))
        jax.block_until_ready(acting.sample_episode_chunks(
            stacked, np.zeros((1, num_envs, obs_dim), observation.dtype), np.zeros((1, num_envs, 2), np.uint32),
            np.zeros((1, num_envs), np.int32)))
        # The first chunks of the episodes that start together, one call each against one batched call: the
        # same numbers up to float rounding (XLA's products differ in summation order between the shapes).
        starts = np.stack([env.reset(seed=acting.episode_seed(seed, acting.EVAL_RESETS + round_index, e))[0]
                           for e in range(num_envs)])
        first_keys = np.stack([np.asarray(jax.random.PRNGKey(acting.episode_seed(
            seed, acting.EVAL_ACTIONS + round_index, e))) for e in range(num_envs)])
        alone = np.stack([np.asarray(agent.sample_actions(starts[e], jax.random.fold_in(first_keys[e], 0)))
                          for e in range(num_envs)])
        together = np.asarray(acting.sample_episode_chunks(stacked, starts[None], first_keys[None],
                                                           np.zeros((1, num_envs), np.int32)))[0]
        first_chunk_difference = float(np.max(np.abs(alone - together.reshape(alone.shape))))
        ways = [way for way in ways if way == 'sequential' or way in pools]
        times, parts, results = ({way: [] for way in ways} for _ in range(3))
        for repeat in range(repeats):
            order = ways[repeat % len(ways):] + ways[:repeat % len(ways)]
            for way in (order if repeat % 2 == 0 else order[::-1]):
                worker_pids = [process.pid for _, process in getattr(pools.get(way), 'workers', [])]
                own_before = self_cpu_seconds() + sum(CpuMeter.process_seconds(pid) for pid in worker_pids)
                meter = CpuMeter()
                start = time.perf_counter()
                if way == 'sequential':
                    metrics, policy_s, env_s = sequential_evaluate(agent, env, seed, episodes, round_index, HORIZON)
                    split = (policy_s, env_s)
                else:
                    with _timed_parallel_parts(pools[way]) as totals:
                        (metrics,) = acting.evaluate(stacked, pools[way], [seed], episodes, round_index, HORIZON)
                    split = (totals['policy'], totals['env'])
                times[way].append(time.perf_counter() - start)
                own = self_cpu_seconds() + sum(CpuMeter.process_seconds(pid) for pid in worker_pids) - own_before
                cpu = meter.stop(own)
                parts[way].append(split + (cpu['own_cores'], cpu['other_cores']))
                results[way].append(metrics)
                log(f'[benchmark]   {way}: {times[way][-1]:.1f} s (policy {split[0]:.1f} s, environments '
                    f'{split[1]:.1f} s), {mean_metrics(metrics)}')
        reference = results['sequential'][0]
        differences = {way: next((d for d in (compare_metrics(reference, m) for m in found) if d), '')
                       for way, found in results.items()}
        main_way = 'pool' if 'pool' in times else 'batched' if 'batched' in times else 'sequential'
        record = {
            'agent': name, 'size': size, 'status': 'ok', 'episodes': episodes, 'envs': num_envs, 'repeats': repeats,
            'round_index': round_index, 'ways': ways, 'main_way': main_way,
            'seconds': {way: summary(values) for way, values in times.items()},
            'speedup_vs_sequential': {way: summary([s / t for s, t in zip(times['sequential'], values)])
                                      for way, values in times.items()},
            'policy_s': {way: statistics.median(p[0] for p in values) for way, values in parts.items()},
            'env_s': {way: statistics.median(p[1] for p in values) for way, values in parts.items()},
            'own_cores': {way: summary(p[2] for p in values) for way, values in parts.items()},
            'other_cores': {way: summary(p[3] for p in values) for way, values in parts.items()},
            'ms_per_episode': {way: 1000 * statistics.median(values) / episodes for way, values in times.items()},
            'differences': differences, 'same_results': not any(differences.values()),
            'metrics': mean_metrics(reference), 'first_chunk_max_difference': first_chunk_difference,
        }
        # Amdahl's bound with `workers` idle cores: the sequential environment time split evenly over the
        # workers, plus the batched policy calls, no IPC.
        if 'pool' in times:
            workers = len(pools['pool'].workers)
            record['ideal_pool_speedup'] = statistics.median(times['sequential']) / (
                record['policy_s']['pool'] + record['env_s']['sequential'] / workers)
        # The figures of main.py's way, by the names the report and the costs file use.
        record.update(sequential_s=record['seconds']['sequential'], parallel_s=record['seconds'][main_way],
                      speedup=record['speedup_vs_sequential'][main_way],
                      parallel_ms_per_episode=record['ms_per_episode'][main_way])
        return record
    except Exception as error:  # noqa: BLE001 - report and go on
        return {'agent': name, 'size': size, 'status': 'error', 'note': f'{type(error).__name__}: {error}'}


# ----------------------------------------------------------------------------------------------------------------------
# What the measurement needs on an accelerator.
# ----------------------------------------------------------------------------------------------------------------------


def dataset_mb(transitions: int = 1_000_000, obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM) -> float:
    """A device Dataset: observations and next observations, actions, rewards, masks, terminals (float32)."""
    return transitions * (2 * obs_dim + action_dim + 3) * 4 / 2**20


def gpu_plan(update_records=(), command: str = '') -> str:
    """What the same measurement needs on a GPU, for a session lent one."""
    memory = {}
    for r in update_records or ():
        if r.get('status') == 'ok' and r.get('compiled_memory_mb'):
            key = (r['agent'], r['size'])
            memory[key] = max(memory.get(key, 0.0), r['compiled_memory_mb']['total'])
    lines = ['## On a GPU', '',
             'Same command, after `pip install -U "jax[cuda12]"` (check `python -c "import jax; print(jax.devices())"` '
             'lists the GPU); the benchmark sets XLA_PYTHON_CLIENT_PREALLOCATE=false (itself and its main.py '
             'processes), so every process takes only what it uses and the device peaks are real:', '',
             '    python experiments/benchmark.py --mode=updates,seeds,eval --dtypes=float32,bfloat16 '
             '--sizes=paper,small --out=costs_gpu.json',
             '',
             '- updates: ms/update per agent, size and dtype; the device peak (`memory_stats`) is in the table. '
             'bfloat16 should gain at the paper size on tensor-core GPUs (A100/H100) where XLA keeps the dots in '
             'bf16; the small size is launch-bound, expect no gain there.',
             '- seeds: the N-seed process trains all seeds in one program; on a GPU the paper size is where it '
             'should pay most (one launch per op for all seeds). The N-process way runs one process at a time, '
             'so it never needs more memory than one run. Each process holds the dataset once '
             f'({dataset_mb():.0f} MB for 1M cube transitions, obs 40-d) plus per seed the agent, its Adam state '
             'and the online buffer.',
             '- eval: environments stay on the CPU (worker processes, one per core); only the batched policy '
             'call moves to the GPU, so the speed-up over one episode at a time depends on the host\'s cores.']
    if memory:
        lines += ['', 'Memory of one seed\'s compiled update (XLA:CPU `memory_analysis`, arguments + outputs - '
                  'donated + temporaries; a GPU program is of the same order), per agent and size:', '']
        lines += [f'- {agent} {size}: {mb:.0f} MB' for (agent, size), mb in sorted(memory.items())]
        lines += ['', 'With N seeds in one process: about N times that, plus the dataset once.']
    if command:
        lines += ['', f'This run: `{command}`.']
    return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------------------------------------------


def _define_flags(flag_values=None):
    """The command line's flags, in `flag_values` (default: absl's global FLAGS)."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values

    define_list, define_string, define_integer, define_bool = (
        functools.partial(kind, flag_values=flag_values)
        for kind in (flags.DEFINE_list, flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool))
    define_list('mode', ['updates'], f'What to measure, comma-separated: {", ".join(MODES)}.')
    define_list('agents', benchmark_names(), f'Agents of --mode=updates ({", ".join(known_names())}; default: all '
                'but the BC pre-training).')
    define_list('sizes', None, f'Network sizes ({", ".join(SIZES)}; large: 4 x 1024 with actor layer norm; default '
                'per mode: '
                + '; '.join(f'{mode} {",".join(sizes)}' for mode, sizes in DEFAULT_SIZES.items()) + ').')
    define_list('dtypes', ['float32'], f'Compute dtypes of --mode=updates ({", ".join(DTYPES)}).')
    define_integer('dataset_size', 1_000_000, 'Synthetic transitions on the device.')
    define_integer('updates_per_call', 20, 'Updates per jitted train_steps call.')
    define_integer('num_windows', 5, 'Timed windows after compilation (the median is reported).')
    define_integer('calls_per_window', 1, 'Calls per timed window.')
    define_integer('seed', 0, 'Seed of the agents and the synthetic data.')
    define_bool('isolate', True, 'One process per (agent, size, dtype): clean compile caches and memory peaks.')
    define_list('reference_ms', [], 'agent:size:ms entries (e.g. fql:small:3.6): the authors\' code timed on '
                'this machine.')
    # --mode=seeds
    define_string('run_agent', 'trqam', 'The method of the main.py runs of --mode=seeds.')
    define_string('dataset_dir', None, f'Folder with {RUN_DATA_ENV}.npz for --mode=seeds (default: '
                  '{out_dir}/data, generated there when missing).')
    define_integer('data_episodes', 10, f'Episodes of {RUN_DATA_ENV} generated when --dataset_dir has none.')
    define_list('seed_counts', [], 'Seeds per process to compare, e.g. 1,2,4 or small:1/2/4/8,paper:1/2 '
                '(default: ' + '; '.join(f'{s} {"/".join(map(str, v["seed_counts"]))}'
                                         for s, v in RUN_SETTINGS.items()) + ').')
    define_integer('run_offline_steps', None, 'Offline steps of each run (default: per size, RUN_SETTINGS).')
    define_integer('run_online_steps', None, 'Online steps of each run (default: per size).')
    define_integer('run_eval_episodes', None, 'Episodes of each of the two evaluations (default: per size).')
    define_string('compile_cache_dir', '', 'A persistent compilation cache shared by the main.py processes '
                  '(default: none, every process compiles).')
    # --mode=eval
    define_list('eval_agents', ['fql', 'trqam'], 'Agents of --mode=eval.')
    define_string('eval_env', RUN_ENV, 'Environment of --mode=eval (and the runs of --mode=seeds).')
    define_integer('eval_episodes', 50, 'Episodes of one evaluation in --mode=eval.')
    define_integer('eval_workers', -1, 'Worker processes of the parallel evaluation (-1: one per core).')
    define_integer('eval_envs', -1, 'Environments of the evaluation at once, as main.py\'s --eval_envs (-1: '
                   'main.py\'s default, read from it).')
    define_list('eval_ways', list(EVAL_WAYS), 'Ways of --mode=eval: ' + '; '.join(
        f'{way}: {name}' for way, name in EVAL_WAY_NAMES.items()) + '.')
    # Both.
    define_integer('repeats', 1, 'Interleaved repeats of --mode=seeds and --mode=eval (medians and ranges).')
    define_string('out_dir', 'runs/benchmark', 'Where benchmark.json and benchmark.md go.')
    define_string('out', None, 'Costs JSON for experiments/sweep.py --costs=FILE (updated if it exists).')
    define_bool('print_gpu_plan', True, 'Print what the measurement needs on a GPU.')
    define_bool('quiet', False, 'Print nothing (used by the isolated workers).')


def sizes_for(mode: str, sizes) -> list:
    sizes = list(sizes) if sizes else list(DEFAULT_SIZES[mode])
    unknown = [size for size in sizes if size not in SIZES]
    if unknown:
        raise ValueError(f'Unknown sizes {unknown}; known: {", ".join(SIZES)}.')
    return sizes


def main(_):
    from absl import flags
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    FLAGS = flags.FLAGS
    log = (lambda *args: None) if FLAGS.quiet else (lambda *args: print(*args, flush=True))
    modes = parse_modes(FLAGS.mode)
    dtypes = parse_dtypes(FLAGS.dtypes)
    command = shlex.join(['python', 'experiments/benchmark.py', *sys.argv[1:]])
    records, seeds_result, eval_records, parts, extra = [], None, [], [], {}
    if 'updates' in modes:
        records = run_benchmarks(FLAGS.agents, sizes_for('updates', FLAGS.sizes), FLAGS.dataset_size,
                                 FLAGS.updates_per_call, FLAGS.num_windows, FLAGS.calls_per_window, FLAGS.isolate,
                                 FLAGS.seed, log, parse_references(FLAGS.reference_ms), dtypes)
        if 'bfloat16' in dtypes and not FLAGS.quiet:
            flags_found, probe = cpu_flags(), xla_bf16_probe()
            extra['bf16'] = {'cpu_flags': flags_found, 'xla_probe': probe,
                             'text': describe_bf16(flags_found, probe, bf16_ratios(records))}
            parts.append('## bfloat16\n\n' + extra['bf16']['text'] + '\n')
    if 'seeds' in modes:
        dataset_dir = FLAGS.dataset_dir or ensure_run_dataset(os.path.join(FLAGS.out_dir, 'data'),
                                                              FLAGS.data_episodes, log)
        overrides = {'offline_steps': FLAGS.run_offline_steps, 'online_steps': FLAGS.run_online_steps,
                     'eval_episodes': FLAGS.run_eval_episodes}
        seeds_result = seeds_benchmark(sizes_for('seeds', FLAGS.sizes), FLAGS.run_agent, os.path.abspath(dataset_dir),
                                       FLAGS.eval_env, FLAGS.repeats, os.path.abspath(os.path.join(
                                           FLAGS.out_dir, 'seeds_runs', time.strftime('%Y%m%d-%H%M%S'))),
                                       FLAGS.compile_cache_dir, log, overrides, parse_seed_counts(FLAGS.seed_counts))
        extra['seeds'] = seeds_result
        parts.append(seeds_markdown(seeds_result))
    if 'eval' in modes:
        eval_records = eval_benchmark(FLAGS.eval_agents, sizes_for('eval', FLAGS.sizes), FLAGS.eval_env,
                                      FLAGS.eval_episodes, FLAGS.eval_workers, FLAGS.repeats, FLAGS.seed, log=log,
                                      ways=FLAGS.eval_ways, eval_envs=FLAGS.eval_envs if FLAGS.eval_envs >= 0 else
                                      main_defaults()['eval_envs'])
        extra['eval'] = eval_records
        parts.append(eval_markdown(eval_records))
    if FLAGS.print_gpu_plan and not FLAGS.quiet:
        parts.append(gpu_plan(records, command))
    extra['command'] = command
    json_path, md_path = write_outputs(records, FLAGS.out_dir, extra, parts)
    if records:
        log(to_markdown(records))
    for part in parts:
        log(part)
    if FLAGS.out:
        costs = write_costs(FLAGS.out, costs_from(records, seeds_result, eval_records, device_name(), command))
        log(f'Wrote the costs to {FLAGS.out}: {json.dumps(costs)}')
    log(f'Wrote {json_path} and {md_path}.')


if __name__ == '__main__':
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')  # real device peaks; room for child processes
    from absl import app

    _define_flags()
    app.run(main)
