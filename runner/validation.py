"""Every setting of a run checked against its meaning before the run creates anything: one line per violation,
naming the flag or agent key, its value and the valid range (runner.flags.FLAG_RANGES for main.py's flags, each
agent module's CONFIG_RANGES for its config), with the nearest valid name for a mistyped one. Also the agent
config's keys, defaults and comments for `main.py --help`.
"""

import ast
import glob
import importlib
import io
import os
import re
import runpy
import tokenize

from agents import base
from core.errors import RunError, close_match
from envs.offline_data import suite_of
from protocols.methods import method_of
from runner.flags import FLAG_RANGES

class InvalidSettings(RunError):
    exit_code = 2  # as absl's for a flag it cannot parse


def check_settings(config):
    """Raises InvalidSettings listing every flag, agent key and combination of `config` (a resolved run config)
    that cannot run, and the environment name when it names no environment."""
    problems = flag_problems(config) + agent_problems(config.agent, config.agent_class) + combination_problems(config)
    try:
        suite_of(config.env_name).parse_env_name(config.env_name)
    except ValueError as error:
        problems.append(f'--env_name: {error}')
    if problems:
        raise InvalidSettings('\n'.join(problems))


def flag_problems(config) -> list:
    problems = [FLAG_RANGES[name].problem(f'--{name}', config[name]) for name in FLAG_RANGES
                if name in config and name != 'seed']
    seeds_flag = '--seed' if tuple(config.seeds) == (config.seed,) else '--seeds'
    problems += [FLAG_RANGES['seed'].problem(seeds_flag, seed) for seed in config.seeds]
    return [problem for problem in problems if problem]


def agent_problems(agent_config, agent_class) -> list:
    """The agent config's keys outside the ranges its module declares (CONFIG_RANGES, else the shared ones)."""
    module = importlib.import_module(agent_class.__module__)
    ranges = getattr(module, 'CONFIG_RANGES', base.CONFIG_RANGES)
    problems = [ranges[key].problem(f'--agent.{key}', agent_config[key]) for key in agent_config if key in ranges]
    if hasattr(module, 'config_problems'):
        problems += [f'--agent.{problem}' for problem in module.config_problems(agent_config)]
    return [problem for problem in problems if problem]


def combination_problems(config) -> list:
    problems = []
    if len(config.seeds) > 1 and config.run_name and '{seed}' not in config.run_name:
        problems.append(f'--run_name={config.run_name} with {len(config.seeds)} seeds: put "{{seed}}" in it, so '
                        'each seed gets its own run directory.')
    if len(set(config.seeds)) != len(config.seeds):
        problems.append(f'--seeds={",".join(map(str, config.seeds))} repeats a seed.')
    if config.balanced_sampling and config.online_steps and config.start_training < config.agent.horizon_length:
        problems.append(f'--balanced_sampling draws half of every batch from the online transitions: '
                        f'--start_training={config.start_training} must be at least the chunk length '
                        f'{config.agent.horizon_length}.')
    return problems


# Command line: the agent config file and its keys. -----------------------------------------------------------------


def agent_file_problem(path: str):
    """A line saying that `path` (--agent) is no file, with the agent config files nearest to it; else None."""
    if os.path.isfile(path):
        return None
    agents_dir = os.path.relpath(os.path.dirname(base.__file__))
    files = sorted(name for name in glob.glob(os.path.join(agents_dir, '*.py'))
                   if 'def get_config' in open(name).read())
    return (f'--agent={path}: no such file.{close_match(path, files)} The agent config files: {", ".join(files)}'
            f'{" (paths are relative to " + os.getcwd() + ")" if not os.path.isabs(path) else ""}.')


def load_agent_config(path: str):
    return runpy.run_path(path)['get_config']()


def unknown_agent_keys(path: str, overrides) -> str:
    """One line per --agent.KEY of `overrides` (the keys given) that the config of `path` lacks, with the nearest
    key, and the config's keys; '' when it has them all."""
    config = load_agent_config(path)
    unknown = [key for key in overrides if key.split('.')[0] not in config]
    if not unknown:
        return ''
    lines = [f'{path} has no config key {key!r} (from --agent.{key}=...).{close_match(key, config)}' for key in unknown]
    return '\n'.join(lines + [f'Its keys: {", ".join(sorted(config))} (--help lists them with their defaults).'])


def agent_keys_help(path: str) -> str:
    """The keys of the agent config `path` with their defaults, the comments of its get_config and valid ranges."""
    config = load_agent_config(path)
    module = importlib.import_module(method_of(config).agent_class().__module__)
    ranges = getattr(module, 'CONFIG_RANGES', base.CONFIG_RANGES)
    comments = config_comments(path)
    lines = [f'Agent config keys of {path} (override with --agent.KEY=VALUE; the protocol completes the ones the '
             'command line leaves, see protocols/domains.py):']
    for key, value in config.items():
        notes = [comments.get(key, ''), f'[{ranges[key]}]' if key in ranges else '']
        lines.append(f'  --agent.{key}={value!r}' + ('  # ' + ' '.join(filter(None, notes)) if any(notes) else ''))
    return '\n'.join(lines)


def config_comments(path: str) -> dict:
    """{key: trailing comment} of the assignments in `path`'s get_config, over those of the agent configs it starts
    from (`from agents.X import get_config`)."""
    source = open(path).read()
    tree = ast.parse(source)
    comments = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any(alias.name == 'get_config' for alias in node.names):
            comments.update(config_comments(os.path.join(os.path.dirname(path), node.module.split('.')[-1] + '.py')))
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == 'get_config')
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type == tokenize.COMMENT and function.lineno <= row <= function.end_lineno:
            assigned = re.match(r'\s*(?:config\.)?(\w+)\s*=', lines[row - 1])
            if assigned:
                comments[assigned.group(1)] = token.string.lstrip('#').strip()
    return comments
