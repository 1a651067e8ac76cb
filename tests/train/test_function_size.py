"""Issue 13's rule for the training engine: no function in ``rs_search/train/`` longer than 60
lines or with more than 8 parameters (the engine used to thread its state through a 19-parameter
``_epochs``; a ``Trainer`` now owns it).

Lines run from the ``def`` line to the function's last line (docstring and comments included,
decorators not). Parameters count every kind: positional-only, ordinary, keyword-only, ``*args``
and ``**kwargs``; a method's ``self`` or ``cls`` does not count (it is the object the state lives
in, which is the point of the rule). Nested functions are checked on their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rs_search.train

MAX_LINES = 60
MAX_PARAMETERS = 8
TRAIN = Path(rs_search.train.__file__).parent

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(tree: ast.AST) -> list[tuple[Function, bool]]:
    """Every function with whether it is defined directly in a class body."""
    found: list[tuple[Function, bool]] = []

    def visit(node: ast.AST, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, Function):
                found.append((child, in_class))
                visit(child, False)
            else:
                visit(child, isinstance(child, ast.ClassDef))

    visit(tree, False)
    return found


def parameter_count(func: Function, *, method: bool) -> int:
    args = func.args
    positional = [*args.posonlyargs, *args.args]
    count = len(positional) + len(args.kwonlyargs)
    count += (args.vararg is not None) + (args.kwarg is not None)
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list)
    if method and not static and positional and positional[0].arg in ("self", "cls"):
        count -= 1
    return count


def violations(source: str, where: str) -> list[str]:
    found = []
    for func, method in _functions(ast.parse(source)):
        lines = (func.end_lineno or func.lineno) - func.lineno + 1
        params = parameter_count(func, method=method)
        if lines > MAX_LINES or params > MAX_PARAMETERS:
            found.append(f"{where}:{func.lineno} {func.name}: {lines} lines, {params} parameters")
    return found


def test_no_function_in_train_is_too_long_or_takes_too_many_parameters() -> None:
    files = sorted(TRAIN.rglob("*.py"))
    assert len(files) >= 10  # the package, not an empty folder
    found = [v for path in files for v in violations(path.read_text(), path.name)]
    assert not found, "\n".join(found)


def test_the_check_sees_what_it_must() -> None:
    """The counting itself: kinds of parameters, self, nesting, length."""
    long_body = "\n".join(f"    x{i} = {i}" for i in range(60))
    source = (
        "def nine(a, /, b, *c, d, e, f, g, h, **i):\n    pass\n"
        "class K:\n"
        "    def method(self, a, b, c, d, e, f, g, h):\n        pass\n"
        "    @staticmethod\n"
        "    def static(self, a, b, c, d, e, f, g, h):\n        pass\n"
        "def outer():\n    def inner(a, b, c, d, e, f, g, h, i):\n        pass\n"
        f"def long():\n{long_body}\n"
    )
    found = violations(source, "x.py")
    assert [line.split()[1] for line in found] == ["nine:", "static:", "inner:", "long:"]
    assert "x.py:1 nine: 2 lines, 9 parameters" in found
    assert any(line.endswith("61 lines, 0 parameters") for line in found)
