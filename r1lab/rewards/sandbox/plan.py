"""Turn tests into a plan the sandbox's child can run and the parent can judge (pure, no processes).

``build_plan(tests, code, entry_point=None) -> Plan`` accepts three formats:

- a list of statements, each one test (``["assert f(1) == 2", ...]``; MBPP style). An element
  without any assert is set-up, not a test;
- HumanEval's ``test`` text (module set-up plus ``def check(candidate): ...``) with its
  ``entry_point``: the module-level statements run before the program, then
  ``candidate = <entry_point>``, then each statement of ``check``'s body that contains a
  non-constant assert is one test (``assert True, "..."`` lines are not tests); its other
  statements are set-up, run in order;
- a plain script of top-level asserts (a string without ``entry_point``), split the same way.

Every import the tests contain is also run before the program ("hoisted" into ``pre``), so the
harness can put back what the program replaced in those modules, ``sys.modules`` or ``builtins``.

How a test is judged, strongest first:

1. ``assert A op B`` at the top of a test, with one side a Python literal (``ast.literal_eval``)
   and one comparison operator: the child evaluates only the other side, turns it into plain
   data and sends it; the parent applies ``op`` against the literal. The expected value never
   enters the child, so no trick inside the program can forge this pass short of computing it.
   ``assert A`` / ``assert not A`` are judged the same way on A's plain value.
2. Anything else runs in the child ("check"), rewritten so that every ``assert`` compares plain
   data (``__r1lab_cmp__`` / ``__r1lab_truth__``); a test passes when it runs to its end.

In both, every call to one of the program's functions (its top-level ``def``/assigned names,
``candidate``, the entry point) is wrapped in ``__r1lab_plain__``: the returned value becomes
exact builtin types before any operator of the test touches it, so ``__eq__``/``__bool__``/
``__sub__`` overrides of a returned object cannot make a test pass (it fails with a TypeError:
only plain values, numpy scalars and builtin lazy iterators are accepted).
"""

from __future__ import annotations

import ast
import json
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any

OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
       ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_APPLY = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
          ">=": operator.ge, "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
          "is": operator.is_, "is not": operator.is_not, "truth": lambda a, b: bool(a),
          "not": lambda a, b: not a}
_TAGS = {"l": list, "t": tuple, "s": set, "f": frozenset}


@dataclass(frozen=True)
class Test:
    """One counted test. ``kind`` "value": the parent compares; "check": the child's verdict."""

    label: str
    kind: str
    op: str = ""
    expected: Any = None
    literal_left: bool = False


@dataclass(frozen=True)
class Plan:
    pre: list[str] = field(default_factory=list)  # set-up run before the program
    steps: list[tuple[str, int, str]] = field(default_factory=list)  # (kind, test index, source)
    tests: list[Test] = field(default_factory=list)


class _Rewrite(ast.NodeTransformer):
    def __init__(self, names: set[str]):
        self.names = names

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id in self.names:
            return ast.Call(ast.Name("__r1lab_plain__", ast.Load()), [node], [])
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self.generic_visit(node)
        t = node.test
        if isinstance(t, ast.Compare) and len(t.ops) == 1 and type(t.ops[0]) in OPS:
            op = ast.Constant(OPS[type(t.ops[0])])
            node.test = ast.Call(ast.Name("__r1lab_cmp__", ast.Load()), [op, t.left, t.comparators[0]], [])
        elif isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not):
            truth = ast.Call(ast.Name("__r1lab_truth__", ast.Load()), [t.operand], [])
            node.test = ast.UnaryOp(ast.Not(), truth)
        else:
            node.test = ast.Call(ast.Name("__r1lab_truth__", ast.Load()), [t], [])
        return node


def program_names(code: str) -> set[str]:
    """Top-level function and variable names the program defines (empty if it does not parse)."""
    try:
        with warnings.catch_warnings():  # model code: an invalid escape would print a SyntaxWarning
            warnings.simplefilter("ignore")  # SyntaxWarning (3.12+) or DeprecationWarning (3.11)
            tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _has_assert(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(node))


def _label(node: ast.AST) -> str:
    text = " ".join(line.strip() for line in ast.unparse(node).splitlines())
    return text if len(text) <= 120 else text[:117] + "..."


def _value_test(stmt: ast.stmt, names: set[str]) -> tuple[Test, str] | None:
    """(test, child expression) for a top-level assert the parent can judge, else None."""
    if not isinstance(stmt, ast.Assert):
        return None
    t, label = stmt.test, _label(stmt)
    if isinstance(t, ast.Compare) and len(t.ops) == 1 and type(t.ops[0]) in OPS:
        op = OPS[type(t.ops[0])]
        for lit_node, other, left in ((t.comparators[0], t.left, False), (t.left, t.comparators[0], True)):
            ok, value = _literal(lit_node)
            if ok and not _literal(other)[0]:
                expr = ast.Expression(_Rewrite(names).visit(other))
                return Test(label, "value", op, value, left), ast.unparse(expr)
        return None
    if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not):
        op, inner = "not", t.operand
    else:
        op, inner = "truth", t
    if _literal(inner)[0]:
        return None
    return Test(label, "value", op), ast.unparse(ast.Expression(_Rewrite(names).visit(inner)))


def _add(plan: Plan, stmts: list[ast.stmt], names: set[str]) -> None:
    """Append statements to the plan: counted tests where they assert, set-up otherwise."""
    for stmt in stmts:
        if not _has_assert(stmt):
            plan.steps.append(("exec", -1, ast.unparse(stmt)))
            continue
        index = len(plan.tests)
        judged = _value_test(stmt, names)
        if judged is not None:
            plan.tests.append(judged[0])
            plan.steps.append(("value", index, judged[1]))
        else:
            plan.tests.append(Test(_label(stmt), "check"))
            tree = ast.fix_missing_locations(_Rewrite(names).visit(ast.Module([stmt], [])))
            plan.steps.append(("check", index, ast.unparse(tree)))


def _hoist_imports(plan: Plan) -> None:
    """Copy every absolute import of the tests into ``pre``: the modules the tests use are then
    loaded before the program runs, and the harness can undo what the program does to them."""
    seen = set(plan.pre)
    for _, _, src in plan.steps:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level):
                line = ast.unparse(node)
                if line not in seen:
                    seen.add(line)
                    plan.pre.append(line)


def build_plan(tests: list[str] | str, code: str = "", entry_point: str | None = None) -> Plan:
    """The plan for ``tests`` (see the module docstring). Raises ValueError for malformed tests."""
    plan = _build(tests, code, entry_point)
    _hoist_imports(plan)
    return plan


def _build(tests: list[str] | str, code: str, entry_point: str | None) -> Plan:
    names = program_names(code) | ({entry_point} if entry_point else set())
    plan = Plan()
    if isinstance(tests, str):
        try:
            tree = ast.parse(tests)
        except SyntaxError as exc:
            raise ValueError(f"the tests do not parse: {exc}") from exc
        if entry_point is None:
            _add(plan, tree.body, names)
            return plan
        check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
        if check is None or len(check.args.args) != 1:
            raise ValueError("HumanEval tests need a `def check(candidate)` function")
        arg = check.args.args[0].arg
        for node in tree.body:
            is_call = isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            if node is not check and not is_call:
                plan.pre.append(ast.unparse(node))
        plan.steps.append(("exec", -1, f"{arg} = {entry_point}"))
        _add(plan, check.body, names | {arg})
        return plan
    for src in tests:
        try:
            tree = ast.parse(src)
        except SyntaxError as exc:
            raise ValueError(f"test {src!r} does not parse: {exc}") from exc
        if len(tree.body) == 1:
            _add(plan, tree.body, names)
        elif _has_assert(tree):
            index = len(plan.tests)
            plan.tests.append(Test(_label(tree), "check"))
            rewritten = ast.fix_missing_locations(_Rewrite(names).visit(tree))
            plan.steps.append(("check", index, ast.unparse(rewritten)))
        else:
            plan.steps.append(("exec", -1, src))
    return plan


def decode(obj: Any, depth: int = 0) -> Any:
    """Inverse of the child's ``encode`` on parsed JSON: tagged lists back to Python containers."""
    if depth > 200:
        raise ValueError("value nested too deeply")
    if not isinstance(obj, list):
        return obj
    if not obj or not isinstance(obj[0], str):
        raise ValueError("malformed value")
    tag, items = obj[0], obj[1:]
    if tag in _TAGS:
        return _TAGS[tag](decode(x, depth + 1) for x in items)
    if tag == "d":
        return {decode(items[i], depth + 1): decode(items[i + 1], depth + 1) for i in range(0, len(items), 2)}
    if tag == "c" and len(items) == 2:
        return complex(items[0], items[1])
    if tag == "b" and len(items) == 1:
        return bytes.fromhex(items[0])
    raise ValueError(f"unknown value tag {tag!r}")


def parse_line(text: str) -> list:
    """The decoded field list of one result line's payload (raises ValueError when malformed)."""
    try:
        fields = decode(json.loads(text))
    except (json.JSONDecodeError, RecursionError, TypeError) as exc:
        raise ValueError(f"malformed result line: {exc}") from exc
    if not isinstance(fields, list):
        raise ValueError("malformed result line")
    return fields


def judge(test: Test, got: Any) -> tuple[bool, str]:
    """Apply a value test's operator to the plain value the child sent (parent side)."""
    a, b = (test.expected, got) if test.literal_left else (got, test.expected)
    try:
        ok = bool(_APPLY[test.op](a, b))
    except Exception as exc:  # e.g. None < 3: the same TypeError the assert would have raised
        return False, f"{type(exc).__name__}: {exc}"
    if ok:
        return True, ""
    shown = repr(got)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    wanted = "" if test.op in ("truth", "not") else f", expected {test.op} {test.expected!r}"
    return False, f"got {shown}{wanted}"
