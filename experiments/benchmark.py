"""Training speed of every agent: updates per second, compile time and peak memory, on whatever device
JAX sees. The one place the project measures speed (tests never assert a time).

    python experiments/benchmark.py                                   # all agents, paper and small sizes
    python experiments/benchmark.py --agents=fql,trqam --sizes=small --out_dir=runs/benchmark

Each (agent, size) runs `utils.training.train_steps` with `--updates_per_call` updates per call on a
synthetic device dataset (`--dataset_size` transitions, observations 40-d, actions 5-d, chunks of 5,
episodes of 400-600 steps). After the first call (its time, minus one steady call, is the compile time),
`--num_windows` windows of `--calls_per_window` calls are timed; the median window gives updates/s.
Peak memory is the process's peak RSS (`resource.getrusage`) and, on accelerators, the device's
`peak_bytes_in_use`. With `--isolate` (the default) every measurement runs in its own process, so
compile caches and memory peaks do not leak between agents.

Agents are named by their method's slug in the registry (`agents.METHODS`: trqam, qam, qam-e, ...).
Writes `{out_dir}/benchmark.json` and `{out_dir}/benchmark.md`. CPUs differ several-fold on these
workloads (AVX-512 or not, clock, memory), so a speed-up is only meaningful against the authors' code
timed on the same machine: pass its ms/update and the table adds the speed-up (reference / ours):

    python experiments/benchmark.py --agents=fql,qam --reference_ms=fql:small:3.6,qam:small:8.6
"""

import json
import os
import platform
import resource
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
}
OBS_DIM, ACTION_DIM, HORIZON = 40, 5, 5


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
    """Every registered method but the BC pre-training, by slug."""
    from agents import BC, METHODS

    return [method.slug for method in METHODS.values() if method is not BC]


def agent_config(name: str, size: str):
    """The config of benchmark agent `name` (a method's slug) at `size`."""
    from agents import method_by_slug

    config = method_by_slug(name).default_config()
    with config.unlocked():
        for key, value in {**SIZES[size], 'horizon_length': HORIZON}.items():
            if key in config:
                config[key] = value
    return config


def _max_rss_mb() -> float:
    scale = 1024 * 1024 if sys.platform == 'darwin' else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


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
    """Sets the reference ms/update of `record` and its speed-up (reference / ours)."""
    reference = references.get((record['agent'], record['size']))
    ms = record['ms_per_update']
    record['reference_ms_per_update'] = list(reference) if reference else None
    record['speedup_vs_reference'] = [reference[0] / ms, reference[1] / ms] if reference else None
    return record


def benchmark_one(name: str, size: str, dataset, updates_per_call: int = 20, num_windows: int = 5,
                  calls_per_window: int = 1, seed: int = 0) -> dict:
    """Measures one agent at one size on the device `dataset` (a utils.datasets.Dataset)."""
    import jax

    from agents import get_agent_class
    from utils.datasets import example_batch
    from utils.prng import use_unrolled_threefry_on_cpu
    from utils.training import train_steps

    use_unrolled_threefry_on_cpu()
    config = agent_config(name, size)
    rss_before = _max_rss_mb()
    agent = get_agent_class(config.agent_name).create(seed, example_batch(dataset, HORIZON), config)
    agent = jax.tree_util.tree_map(jax.numpy.asarray, agent)
    data_key = jax.random.PRNGKey(seed)
    step = 1

    def call():
        nonlocal agent, step
        agent, info = train_steps(agent, dataset, data_key, step, num_updates=updates_per_call,
                                  batch_size=config.batch_size, horizon_length=HORIZON)
        step += updates_per_call
        return info

    start = time.perf_counter()
    jax.block_until_ready(call())
    first_call = time.perf_counter() - start
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
    record = {
        'agent': name,
        'size': size,
        'status': 'ok',
        **{key: list(value) if isinstance(value, tuple) else value for key, value in SIZES[size].items()},
        'updates_per_call': updates_per_call,
        'dataset_size': int(dataset.size),
        'updates_per_second': updates_per_second,
        'ms_per_update': ms,
        'window_updates_per_second': windows,
        'first_call_s': first_call,
        'compile_s': max(first_call - updates_per_call / updates_per_second, 0.0),
        'peak_rss_mb': _max_rss_mb(),
        'rss_increase_mb': _max_rss_mb() - rss_before,
        'device_peak_bytes': (stats or {}).get('peak_bytes_in_use'),
        'metrics_finite': finite,
        **environment_info(),
    }
    return record


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
                   isolate=False, seed=0, log=print, references=None):
    """Benchmarks every (agent, size); returns the records (failed ones with status 'error').

    `references` ({(agent, size): (low, high)} ms/update): the authors' code timed on this machine.
    """
    references = references or {}
    unknown = [name for name in agents if name not in benchmark_names()]
    if unknown:
        raise ValueError(f'Unknown benchmark agents {unknown}; known: {", ".join(benchmark_names())}.')
    records, dataset = [], None
    for size in sizes:
        if size not in SIZES:
            raise ValueError(f'Unknown size {size!r}; known: {", ".join(SIZES)}.')
        for name in agents:
            log(f'[benchmark] {name} at size {size} ...')
            try:
                if isolate:
                    record = _run_isolated(name, size, dataset_size, updates_per_call, num_windows,
                                           calls_per_window, seed)
                else:
                    if dataset is None:
                        from utils.datasets import Dataset

                        dataset = Dataset.create(synthetic_transitions(dataset_size, seed=seed))
                    record = benchmark_one(name, size, dataset, updates_per_call, num_windows, calls_per_window,
                                           seed)
            except Exception as error:  # noqa: BLE001 - report and continue with the next agent
                record = {'agent': name, 'size': size, 'status': 'error', 'note': f'{type(error).__name__}: {error}'}
            if record['status'] == 'ok':
                attach_reference(record, references)
                log(f'[benchmark] {name} {size}: {record["ms_per_update"]:.2f} ms/update, '
                    f'compile {record["compile_s"]:.1f}s, peak RSS {record["peak_rss_mb"]:.0f} MB')
            else:
                log(f'[benchmark] {name} {size}: {record["status"]}: {record.get("note", "")}')
            records.append(record)
    return records


def _run_isolated(name, size, dataset_size, updates_per_call, num_windows, calls_per_window, seed):
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, os.path.join(REPO_ROOT, 'experiments', 'benchmark.py'), f'--agents={name}',
                   f'--sizes={size}', f'--dataset_size={dataset_size}', f'--updates_per_call={updates_per_call}',
                   f'--num_windows={num_windows}', f'--calls_per_window={calls_per_window}', f'--seed={seed}',
                   '--noisolate', f'--out_dir={out_dir}', '--quiet']
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        path = os.path.join(out_dir, 'benchmark.json')
        if result.returncode != 0 or not os.path.exists(path):
            return {'agent': name, 'size': size, 'status': 'error',
                    'note': f'worker exited with {result.returncode}: {result.stderr.strip()[-1500:]}'}
        with open(path) as f:
            (record,) = [r for r in json.load(f)['records'] if r.get('size') == size]
        return record


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
    lines += ['| agent | size | updates/s | ms/update | compile (s) | peak RSS (MB) | device peak (MB) | '
              'reference ms/update (authors, this CPU) | speed-up (reference / ours) |',
              '|---|---|---|---|---|---|---|---|---|']
    for r in ok:
        reference, speedup = _format_reference(r)
        device_peak = f'{r["device_peak_bytes"] / 2**20:.0f}' if r.get('device_peak_bytes') else ''
        lines.append(f'| {r["agent"]} | {r["size"]} | {r["updates_per_second"]:.1f} | {r["ms_per_update"]:.2f} | '
                     f'{r["compile_s"]:.1f} | {r["peak_rss_mb"]:.0f} | {device_peak} | {reference} | {speedup} |')
    sizes = {size: SIZES[size] for size in dict.fromkeys(r['size'] for r in ok)}
    if sizes:
        lines += ['', 'Sizes: ' + '; '.join(
            f'{name} = actor/critic {list(s["actor_hidden_dims"])}, {s["num_qs"]} critics, batch {s["batch_size"]}'
            for name, s in sizes.items()) + '.']
    others = [r for r in records if r['status'] != 'ok']
    if others:
        lines += ['', 'Not measured:'] + [f'- {r["agent"]} {r.get("size", "")}: {r["status"]}: {r.get("note", "")}'
                                          for r in others]
    return '\n'.join(lines) + '\n'


def write_outputs(records, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, 'benchmark.json')
    with open(json_path, 'w') as f:
        json.dump({'records': records}, f, indent=2)
    md_path = os.path.join(out_dir, 'benchmark.md')
    with open(md_path, 'w') as f:
        f.write(to_markdown(records))
    return json_path, md_path


def _define_flags():
    from absl import flags

    flags.DEFINE_list('agents', benchmark_names(), f'Agents to measure ({", ".join(benchmark_names())}).')
    flags.DEFINE_list('sizes', ['paper', 'small'], f'Network sizes ({", ".join(SIZES)}).')
    flags.DEFINE_integer('dataset_size', 1_000_000, 'Synthetic transitions on the device.')
    flags.DEFINE_integer('updates_per_call', 20, 'Updates per jitted train_steps call.')
    flags.DEFINE_integer('num_windows', 5, 'Timed windows after compilation (the median is reported).')
    flags.DEFINE_integer('calls_per_window', 1, 'Calls per timed window.')
    flags.DEFINE_integer('seed', 0, 'Seed of the agents and the synthetic data.')
    flags.DEFINE_bool('isolate', True, 'One process per (agent, size): clean compile caches and memory peaks.')
    flags.DEFINE_string('out_dir', 'runs/benchmark', 'Where benchmark.json and benchmark.md go.')
    flags.DEFINE_list('reference_ms', [], 'agent:size:ms entries (e.g. fql:small:3.6): the authors\' code timed on '
                      'this machine.')
    flags.DEFINE_bool('quiet', False, 'Print nothing (used by the isolated workers).')


def main(_):
    from absl import flags
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    FLAGS = flags.FLAGS
    log = (lambda *args: None) if FLAGS.quiet else (lambda *args: print(*args, flush=True))
    records = run_benchmarks(FLAGS.agents, FLAGS.sizes, FLAGS.dataset_size, FLAGS.updates_per_call,
                             FLAGS.num_windows, FLAGS.calls_per_window, FLAGS.isolate, FLAGS.seed, log,
                             parse_references(FLAGS.reference_ms))
    json_path, md_path = write_outputs(records, FLAGS.out_dir)
    log(to_markdown(records))
    log(f'Wrote {json_path} and {md_path}.')


if __name__ == '__main__':
    from absl import app

    _define_flags()
    app.run(main)
