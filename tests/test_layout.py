"""The package's architecture, checked: layers, no import circle, no private names across modules.

``psbn_mmdet/``'s subpackages are layers; a module imports only from its own
layer and those below it (function-level imports count):

    utils -> core -> models -> engine -> io -> analysis -> pruning -> export
    -> cli -> demo

The top-level ``psbn_mmdet/__init__.py`` is the public API over them and no
module imports it.  Function-level imports are for what would make a light
path heavy (mmdet, mmcv, matplotlib, mmengine's runner/model/hook stack, or
the package's modules that import them), never for the standard library.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'psbn_mmdet'
LAYERS = ('utils', 'core', 'models', 'engine', 'io', 'analysis', 'pruning',
          'export', 'cli', 'demo')
MAX_LINES = 500
#: what a function may import: heavy dependencies and the modules that
#: import them, so that reading a checkpoint never pays for them
LAZY_OK = ('mmdet', 'mmcv', 'matplotlib', 'mmengine.runner',
           'mmengine.model', 'mmengine.hooks', 'mmengine.evaluator',
           'mmengine.dataset',
           'psbn_mmdet.models.backbones', 'psbn_mmdet.pruning',
           'psbn_mmdet.analysis.plots')


def _modules(*packages: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(p for package in packages
                       for p in package.rglob('*.py')):
        parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path):
    """(imported module, imported names, function-level?) of a module."""
    tree = ast.parse(path.read_text())
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    functions = {id(node) for fn in ast.walk(tree)
                 if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for node in ast.walk(fn)}
    for node in ast.walk(tree):
        nested = id(node) in functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], nested
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module
                                          else []))
            else:
                module = node.module
            yield module, [a.name for a in node.names], nested


MODULES = _modules(PACKAGE)
#: the circle check's scope: the product and the research beside it
EVERY_MODULE = _modules(PACKAGE, PACKAGE.parent / 'research')


def _layer(module: str) -> int | None:
    parts = module.split('.')
    if parts[0] != 'psbn_mmdet' or len(parts) < 2:
        return None
    return LAYERS.index(parts[1])


def _resolve(module: str, names: list[str], modules=MODULES) -> list[str]:
    """``from package import module`` imports modules too."""
    found = [module] if module in modules else []
    found += [f'{module}.{n}' for n in names if f'{module}.{n}' in modules]
    return found


def test_every_subpackage_is_a_layer():
    assert {name.split('.')[1] for name in MODULES if '.' in name} == set(
        LAYERS)


@pytest.mark.parametrize('name', sorted(n for n in MODULES
                                        if n != 'psbn_mmdet'))
def test_a_module_imports_only_its_layer_and_those_below(name):
    own = _layer(name)
    for module, names, _ in _imports(name, MODULES[name]):
        if module == 'psbn_mmdet':
            pytest.fail(f'{name} imports the package facade psbn_mmdet')
        for target in _resolve(module, names):
            layer = _layer(target)
            assert layer is not None and layer <= own, (
                f'{name} ({LAYERS[own]}) imports {target} '
                f'({LAYERS[layer]})')


def test_no_import_circle():
    """In psbn_mmdet/ and research/, function-level imports included."""
    graph = {name: {t for module, names, _ in _imports(name, path)
                    for t in _resolve(module, names, EVERY_MODULE)
                    if t != name}
             for name, path in EVERY_MODULE.items()}
    # a package __init__ re-exports its modules: an edge into the package
    # is an edge into what it imports, not a circle through it
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for target in graph[node]:
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                if not all(EVERY_MODULE[n].name == '__init__.py'
                           or target.startswith(n + '.') for n in cycle):
                    pytest.fail('import circle: ' + ' -> '.join(cycle))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


@pytest.mark.parametrize('name', sorted(MODULES))
def test_no_private_name_of_another_module(name):
    for module, names, _ in _imports(name, MODULES[name]):
        private = [n for n in names if n.startswith('_')]
        assert not (module.startswith('psbn_mmdet') and private), (
            f'{name} imports {private} from {module}')


@pytest.mark.parametrize('name', sorted(MODULES))
def test_function_level_imports_keep_light_paths_light(name):
    for module, names, nested in _imports(name, MODULES[name]):
        if not nested:
            continue
        top = module.split('.')[0]
        assert top not in sys.stdlib_module_names, (
            f'{name}: stdlib {module} imported in a function')
        targets = [f'{module}.{n}' for n in names
                   if f'{module}.{n}' in MODULES] or [module]
        for target in targets:
            assert any(target == ok or target.startswith(ok + '.')
                       for ok in LAZY_OK), (
                f'{name}: {target} imported in a function')


@pytest.mark.parametrize('name', sorted(MODULES))
def test_no_module_over_the_size_limit(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f'{name}: {lines} lines'
