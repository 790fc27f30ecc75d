"""The package's layout, as docs/contributing.rst draws it: who imports whom, and sizes.

The map there names, for each module, what it may import at run time; these
tests hold the code to it, and to a few rules of the layout: no import
cycle, no module over 450 lines, no function above cyclomatic complexity 12.
"""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'pyramid_mongosession')
MAX_LINES = 450
MAX_COMPLEXITY = 12


def package_map():
    """``{module: set of modules it may import}`` from docs/contributing.rst's table."""
    with open(os.path.join(ROOT, 'docs', 'contributing.rst'), encoding='utf-8') as f:
        text = f.read()
    table = text[text.index(':name: package-map'):]
    table = table[:table.index('\n\n', table.index('* - ``'))]
    rows = re.split(r'\n   \* - ', '\n' + table.split('\n   * - Module', 1)[1])[1:]
    found = {}
    for row in rows:
        cells = [' '.join(cell.split()) for cell in re.split(r'\n     - ', row)]
        module = cells[0].strip('`')
        allowed = cells[2]
        found[module] = set() if allowed == '(none)' else {
            name.strip() for name in allowed.split(',')}
    return found


def _top_module(path):
    """The module a file belongs to, as the map names it (a subpackage is one module)."""
    relative = os.path.relpath(path, PACKAGE)[:-len('.py')].split(os.sep)
    return relative[0]


def _runtime_imports(path):
    """The package modules that ``path`` imports at run time (not for type checking only)."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    typing_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, 'id', None) == 'TYPE_CHECKING':
            typing_only.update(id(inner) for inner in ast.walk(node))
    inside = os.path.relpath(os.path.dirname(path), PACKAGE).split(os.sep)
    inside = [] if inside == ['.'] else inside
    imported = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = inside[:len(inside) - (node.level - 1)]
        parts = base + (node.module.split('.') if node.module else [])
        if parts:
            imported.add(parts[0])
        else:   # from . import name
            imported.update(alias.name for alias in node.names)
    return imported


def actual_imports():
    """``{module: set of package modules it imports at run time}``."""
    graph = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                module = _top_module(path)
                graph.setdefault(module, set()).update(_runtime_imports(path) - {module})
    return graph


def test_every_module_is_on_the_map_and_the_map_names_no_other():
    assert set(package_map()) == set(actual_imports())


@pytest.mark.parametrize('module', sorted(actual_imports()))
def test_a_module_imports_only_what_the_map_allows(module):
    allowed = package_map().get(module, set())
    assert actual_imports()[module] <= allowed, (
        '%s imports %s, which docs/contributing.rst does not allow it'
        % (module, ', '.join(sorted(actual_imports()[module] - allowed))))


def test_no_import_cycle():
    graph = actual_imports()
    done, path = set(), []

    def visit(module):
        if module in path:
            pytest.fail('import cycle: %s' % ' -> '.join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for other in sorted(graph.get(module, ())):
            visit(other)
        path.pop()
        done.add(module)
    for module in sorted(graph):
        visit(module)


def test_the_map_itself_has_no_cycle():
    graph = package_map()
    order = []
    remaining = dict(graph)
    while remaining:
        ready = [name for name, needs in remaining.items() if not needs - set(order)]
        assert ready, 'the map allows an import cycle among %s' % ', '.join(sorted(remaining))
        order.extend(sorted(ready))
        for name in ready:
            del remaining[name]


def package_sources():
    """``(path relative to the repository, source)`` of every module of the package."""
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                with open(path, encoding='utf-8') as f:
                    yield os.path.relpath(path, ROOT), f.read()


def test_no_module_is_over_the_line_limit():
    long = ['%s (%d lines)' % (path, source.count('\n')) for path, source in package_sources()
            if source.count('\n') > MAX_LINES]
    assert not long, 'over %d lines: %s' % (MAX_LINES, ', '.join(long))


def test_no_function_is_above_the_complexity_limit():
    from radon.complexity import cc_visit
    above = []
    for path, source in package_sources():
        for block in cc_visit(source):
            for function in [block] + list(getattr(block, 'methods', ())):
                if function.complexity > MAX_COMPLEXITY:
                    above.append('%s:%s (%d)' % (path, function.name, function.complexity))
    assert not above, 'above complexity %d: %s' % (MAX_COMPLEXITY, ', '.join(sorted(set(above))))
