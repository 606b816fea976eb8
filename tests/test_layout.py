"""The package layout is the architecture: each folder is one layer and imports only the layers below it.

    core/        the maths the agents are built from (flow and SDE, networks, critic, distributions) and the
                 error type of a fault a user can fix
    agents/      one algorithm a file, on core/ alone
    envs/        offline data and environments (OGBench, Robomimic, worker processes, videos)
    protocols/   the papers' per-domain tables, the method registry and the one rule that resolves a protocol
    runner/      the machinery main.py drives: flags, settings, state, checkpoints, logs, training, acting
    experiments/ sweeps, aggregation, the benchmark and the studies, on all of the above
"""

import ast
import os

from tests.conftest import REPO_ROOT

# The project's packages each layer may import (itself included); anything else (jax, numpy, ...) is free.
ALLOWED = {
    'core': {'core'},
    'agents': {'core', 'agents'},
    'envs': {'core', 'envs'},
    'protocols': {'core', 'envs', 'protocols'},
    'runner': {'core', 'agents', 'envs', 'protocols', 'runner'},
    'main': {'core', 'agents', 'envs', 'protocols', 'runner'},
    'experiments': {'core', 'agents', 'envs', 'protocols', 'runner', 'main', 'experiments'},
}
PROJECT = set(ALLOWED)


def project_modules():
    """{dotted module name: file path} of every project module outside tests/."""
    modules = {'main': os.path.join(REPO_ROOT, 'main.py')}
    for package in PROJECT - {'main'}:
        for name in sorted(os.listdir(os.path.join(REPO_ROOT, package))):
            if name.endswith('.py'):
                module = package if name == '__init__.py' else f'{package}.{name[:-3]}'
                modules[module] = os.path.join(REPO_ROOT, package, name)
    return modules


def imports_of(path, modules, top_level_only=False):
    """The project modules a file imports (`from pkg import mod` counts as pkg.mod when that is a module)."""
    tree = ast.parse(open(path).read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f'{node.module}.{alias.name}' for alias in node.names if f'{node.module}.{alias.name}' in modules}
    return {name for name in found if name.split('.')[0] in PROJECT}


def test_each_layer_imports_only_the_layers_below_it():
    modules = project_modules()
    wrong = []
    for module, path in modules.items():
        layer = module.split('.')[0]
        for imported in imports_of(path, modules):
            if imported.split('.')[0] not in ALLOWED[layer]:
                wrong.append(f'{module} imports {imported}')
    assert not wrong, 'imports against the layering:\n' + '\n'.join(wrong)


def test_no_import_cycle():
    modules = project_modules()
    graph = {module: {name for name in imports_of(path, modules, top_level_only=True) if name in modules} - {module}
             for module, path in modules.items()}
    # A package's __init__ runs before any of its modules: importing pkg.mod imports pkg first.
    for module in list(graph):
        if '.' in module and module.split('.')[0] in graph:
            graph[module].add(module.split('.')[0])
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = 'open'
        for imported in sorted(graph[module]):
            if state.get(imported) == 'open':
                cycles.append(' -> '.join(stack[stack.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported, stack + [imported])
        state[module] = 'done'

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_layering_check_sees_a_wrong_import(tmp_path):
    # The check itself: an agent importing the run machinery is caught.
    bad = tmp_path / 'bad_agent.py'
    bad.write_text('import jax\nfrom runner.layout import FLAGS_FILE\n\n\ndef f():\n    from envs import datasets\n')
    found = imports_of(str(bad), project_modules())
    assert found == {'runner.layout', 'envs', 'envs.datasets'}
    assert not {name.split('.')[0] for name in found} <= ALLOWED['agents']


MAX_FUNCTION_LINES = 60


def test_no_function_outside_tests_is_longer_than_a_screen():
    long = []
    for module, path in project_modules().items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f'{module}.{node.name}: {length} lines')
    assert not long, f'functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n' + '\n'.join(long)
