"""The code sandbox (r1lab.rewards.sandbox): levels, HumanEval, and hostile programs (the pure
parts — plans, encoding, scores — are in tests/test_sandbox_plan.py).

Each hostile program is its own test. The slow ones (they run until a limit kills them) are
graded together, in parallel, by one module fixture, and each test checks its own verdict.
Tests that need a layer this machine does not give are skipped with the layer's reason; the
"control" tests run the same attack with the layers off and show that the check can fail.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from r1lab.rewards.sandbox import (
    LEVELS,
    Limits,
    Program,
    Sandbox,
    SandboxUnavailable,
    Verdict,
    score,
)
from r1lab.rewards.sandbox import cgroups as cg
from tests.conftest import shared_file

HOSTILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_hostile")

LIMITS = Limits(cpu_seconds=5, memory_mb=256, processes=32, output_bytes=1 << 20)
_BASE = 1_100_000_000 + secrets.randbelow(900) * 1_000_000
UIDS = range(_BASE, _BASE + 1_000_000)  # this session's own per-run uids: concurrent sessions don't mix


@pytest.fixture(scope="module")
def sbx() -> Sandbox:
    return Sandbox(LIMITS, uids=UIDS)


@pytest.fixture(scope="module")
def bare() -> Sandbox:
    """Every optional layer off: the "process" level (here: as root) — for control tests only."""
    return Sandbox(LIMITS, namespaces=False, seccomp=False, cgroups=False, uids=UIDS)


def need(sandbox: Sandbox, *layers: str) -> None:
    for layer in layers:
        if not sandbox.layers[layer].startswith("on"):
            pytest.skip(f"needs the {layer} layer: {sandbox.layers[layer]}")


def sandbox_procs() -> list[int]:
    """Live processes running under one of this session's per-run uids."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    text = f.read()
            except OSError:
                continue
            uid = int(next(ln.split()[1] for ln in text.splitlines() if ln.startswith("Uid:")))
            if uid in UIDS and "\nState:\tZ" not in text:
                found.append(int(name))
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def procs_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


def hostile(name: str) -> str:
    """A hostile program's source (kept as .py.txt so that no tool imports or runs it)."""
    with open(os.path.join(HOSTILE, name + ".py.txt")) as f:
        return f.read()


def our_tempdirs() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(cg.PREFIX)}


def our_cgroups() -> list[str]:
    found, parents = cg.parents()
    return [os.path.join(d, n) for d in set(parents.values()) if os.path.isdir(d)
            for n in os.listdir(d) if n.startswith(cg.PREFIX)]


# ----------------------------------------------------------------------------- levels and basics


def test_levels_are_probed_and_min_level_refuses_below_it(sbx, bare):
    assert sbx.level in LEVELS and bare.level == "process"
    assert set(sbx.layers) == {"process", "uid", "namespaces", "seccomp", "cgroups"}
    with pytest.raises(SandboxUnavailable, match=r"reached level 'process' but min_level='seccomp'"):
        Sandbox(LIMITS, min_level="seccomp", namespaces=False, seccomp=False, cgroups=False)
    with pytest.raises(ValueError):
        Sandbox(LIMITS, min_level="nope")


def test_correct_and_wrong_programs(sbx):
    code = "def f(x):\n    return x + 1\nprint('hi')"
    tests = ["assert f(1) == 2", "assert f(2) == 3", "for i in range(3):\n    assert f(i) == i + 1"]
    v = sbx.run(code, tests)
    assert v.status == "ok" and v.passed == 3 and score(v) == 1.0 and v.stdout == "hi\n", v
    v = sbx.run("def f(x):\n    return x", ["assert f(1) == 2", "assert f(2) == 2"])
    assert (v.status, v.passed, v.total, score(v)) == ("ok", 1, 2, 0.5), v
    assert v.results[0] == "fail: got 1, expected == 2"
    v = sbx.run("def f(:", ["assert f(1) == 2"])
    assert v.status == "error" and "SyntaxError" in v.detail and score(v) == 0.0


def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(sbx):
    path = shared_file("humaneval", "HumanEval.jsonl.gz")
    rows = [json.loads(line) for line in gzip.open(path)]
    good = sbx.run_many([Program(r["prompt"] + r["canonical_solution"], r["test"], r["entry_point"], 30)
                         for r in rows], workers=2)
    assert [r["task_id"] for r, v in zip(rows, good) if not v.all_passed] == []
    wrong = sbx.run_many([Program(r["prompt"] + "    return None\n", r["test"], r["entry_point"], 30)
                          for r in rows[:40]], workers=2)
    assert [r["task_id"] for r, v in zip(rows, wrong) if v.all_passed or score(v) == 1.0] == []


# ----------------------------------------------------------------------------- hostile programs

SLOW = {  # program (tests/sandbox_hostile/NAME.py.txt; each defines f() -> 1 first): statuses that contain it
    "infinite_loop": {"timeout"},
    "catch_every_exception": {"timeout"},
    "sleep_forever": {"timeout"},
    "c_level_work": {"timeout"},
    "deep_recursion": {"timeout", "memory", "crash", "error"},
    "fork_bomb": {"timeout", "memory"},
    "thread_bomb": {"timeout", "memory"},
}
TIMEOUT = 1.5


@pytest.fixture(scope="module")
def slow_verdicts(sbx) -> dict[str, Verdict]:
    """The programs that only a limit stops, graded together on four workers."""
    bounded = sbx.layers["uid"].startswith("on") or sbx.layers["cgroups"].startswith("on")
    names = [n for n in SLOW if bounded or "bomb" not in n]  # no bombs as root without a pids bound
    items = [Program(hostile(n), ["assert f() == 1"], timeout=TIMEOUT) for n in names]
    return dict(zip(names, sbx.run_many(items, workers=4)))


@pytest.mark.parametrize("name", list(SLOW))
def test_hostile_program_is_stopped_by_a_limit(name, slow_verdicts):
    if name not in slow_verdicts:
        pytest.skip("bombs need a per-run process bound (an unprivileged uid or the pids cgroup)")
    v = slow_verdicts[name]
    assert v.status in SLOW[name] and v.passed == 0 and score(v) == 0.0, v
    assert v.seconds < TIMEOUT + 2.0, v  # the kill was prompt
    assert sandbox_procs() == [], "a process of the run survived it"


@pytest.mark.parametrize("name", ["allocate_8gb", "slow_memory_growth"])
def test_memory_hogs_are_stopped(sbx, name):
    v = sbx.run(hostile(name), ["assert f() == 1"], timeout=10)
    assert v.status == "memory" and score(v) == 0.0 and v.seconds < 5, v


def test_memory_spread_over_processes_hits_the_cgroup_limit(sbx):
    need(sbx, "cgroups")
    v = sbx.run(hostile("memory_over_processes"), ["assert f() == 1"], timeout=4)
    assert v.status == "memory" and "OOM" in v.detail and score(v) == 0.0, v


DAEMON = """
import os, sys, time
def f():
    return 1
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-S", "-c", "import time; time.sleep(30)", "MARKER"])
    os._exit(0)
time.sleep(0.5)
mine = [p for p in os.listdir("/proc") if p.isdigit()]
print("daemon alive" if any(b"MARKER" in open(f"/proc/{p}/cmdline", "rb").read() for p in mine) else "none")
"""


def test_double_fork_setsid_daemon_does_not_survive(sbx, bare):
    marker = "r1lab-daemon-" + secrets.token_hex(4)
    control = subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(30)", marker])
    try:  # the check below can see such a process
        deadline = time.monotonic() + 5
        while not procs_with(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procs_with(marker) == [control.pid]
    finally:
        control.kill()
        control.wait()
    for sandbox in (sbx, bare):  # the end of the pid namespace / the supervisor as child subreaper
        v = sandbox.run(DAEMON.replace("MARKER", marker), ["assert f() == 1"], timeout=10)
        assert v.status == "ok" and "daemon alive" in v.stdout, v  # it was running inside the run...
        assert procs_with(marker) == [] and sandbox_procs() == []  # ...and is gone after it


@pytest.mark.parametrize("attack", ["os.kill(os.getppid(), 9)", "os.killpg(0, 9)", "os.kill(-1, 9)"])
def test_killing_parent_or_group_leaves_the_grader_alive(sbx, bare, attack):
    code = f"import os, time\ndef f():\n    return 1\n{attack}\ntime.sleep(0.2)\n"
    sandboxes = [sbx]
    if attack != "os.kill(-1, 9)":  # as root without a pid namespace this would hit the whole machine
        sandboxes.append(bare)
    else:
        need(sbx, "namespaces", "uid")
    for sandbox in sandboxes:
        kids_before = set(descendants(os.getpid()))
        v = sandbox.run(code, ["assert f() == 1", "assert f() == 2"], timeout=5)
        assert v.passed <= 1 and score(v) < 1.0, v
        assert set(descendants(os.getpid())) <= kids_before
    assert os.getpid() > 0  # still here


def test_secret_outside_the_workdir_is_unreadable(sbx, bare, tmp_path):
    need(sbx, "uid")
    secret = "SECRET-" + secrets.token_hex(8)
    paths = [str(tmp_path / "secret.txt"), f"/var/tmp/r1lab-secret-{secrets.token_hex(4)}.txt"]
    try:
        for path in paths:
            with open(path, "w") as f:
                f.write(secret)
            os.chmod(path, 0o600)
        code = ("def f(path):\n    try:\n        return open(path).read()\n    except OSError as exc:\n"
                f"        return type(exc).__name__\nfor p in {paths!r}:\n    print(f(p))\n")
        tests = [f"assert f({p!r}) == {secret!r}" for p in paths]
        v = sbx.run(code, tests)
        assert v.status == "ok" and v.passed == 0 and secret not in v.stdout + v.stderr, v
        if not bare.layers["uid"].startswith("on"):  # control: without the layers (as root) it is read
            assert bare.run(code, tests).passed == 2
    finally:
        os.unlink(paths[1])


def test_writing_outside_the_workdir_does_not_reach_the_host(sbx, bare):
    need(sbx, "namespaces")
    canaries = [f"/tmp/r1lab-canary-{secrets.token_hex(4)}", f"/var/tmp/r1lab-canary-{secrets.token_hex(4)}"]
    code = ("def wrote(path):\n    try:\n        with open(path, 'w') as f:\n            f.write('x')\n"
            "        return True\n    except OSError:\n        return False\n")
    tests = [f"assert wrote({c!r})" for c in canaries]
    v = sbx.run(code, tests)
    assert v.results[0] == "pass"  # the private /tmp is writable inside...
    assert not any(os.path.exists(c) for c in canaries), v  # ...and not the host's
    try:  # control: with the layers off, the same program does write them
        if not bare.layers["uid"].startswith("on"):
            bare.run(code, tests)
            assert all(os.path.exists(c) for c in canaries)
    finally:
        for c in canaries:
            if os.path.exists(c):
                os.unlink(c)


def connects(sandbox: Sandbox) -> tuple[bool, Verdict]:
    """Does a program in ``sandbox`` reach a TCP listener on 127.0.0.1?"""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        code = ("import socket\ndef f():\n    try:\n"
                f"        s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "        s.sendall(b'hi')\n        return 'connected'\n    except OSError as exc:\n"
                "        return type(exc).__name__\n")
        v = sandbox.run(code, ["assert f() == 'connected'"], timeout=10)
        try:
            conn, _ = listener.accept()
            conn.close()
            return True, v
        except TimeoutError:
            return False, v


@pytest.mark.parametrize("layer", ["all", "seccomp", "namespaces"])
def test_no_network_connection(sbx, layer):
    if layer == "all":
        if not (sbx.layers["seccomp"].startswith("on") or sbx.layers["namespaces"].startswith("on")):
            pytest.skip(f"no network layer here: {sbx.layers['seccomp']}; {sbx.layers['namespaces']}")
        sandbox = sbx
    else:
        sandbox = Sandbox(LIMITS, namespaces=layer == "namespaces", seccomp=layer == "seccomp", cgroups=False,
                          uids=UIDS)
        need(sandbox, layer)
    got, v = connects(sandbox)
    assert not got and v.passed == 0, v


def test_control_network_reaches_the_listener_without_layers(bare):
    got, v = connects(bare)
    assert got and v.passed == 1, v


def test_a_gigabyte_to_stdout_is_capped(sbx):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    v = sbx.run(hostile("stdout_flood"), ["assert f() == 1"], timeout=20)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert v.status == "output_limit" and score(v) == 0.0 and len(v.stdout) <= LIMITS.tail_chars, v.status
    assert grown_mb < 100, f"the grader grew by {grown_mb:.0f} MB"


def test_invalid_utf8_output_is_kept_and_graded(sbx):
    code = "import os\ndef f():\n    return 1\nos.write(1, b'\\xff\\xfe\\x80 ok')\nos.write(2, b'\\xc3')\n"
    v = sbx.run(code, ["assert f() == 1"])
    assert v.status == "ok" and v.passed == 1 and "\ufffd" in v.stdout and v.stderr == "\ufffd", v


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit(0)"])
def test_exiting_before_the_tests_is_a_fail(sbx, code):
    v = sbx.run("def f():\n    return 1\n" + code, ["assert f() == 1"])
    assert v.status == "error" and v.passed == 0 and v.results == ("missing",), v


def test_exiting_during_the_tests_fails_the_rest(sbx):
    code = ("import os, sys\ndef f(x):\n    if x == 2:\n        os._exit(0)\n"
            "    if x == 3:\n        sys.exit(0)\n    return x\n")
    v = sbx.run(code, ["assert f(1) == 1", "assert f(3) == 3", "assert f(2) == 2", "assert f(4) == 4"])
    assert v.results[:2] == ("pass", "fail: SystemExit: 0") and v.results[2:] == ("missing", "missing"), v
    assert v.status == "error" and score(v) == 0.0


def test_forged_result_lines_do_not_count(sbx):
    v = sbx.run(hostile("forge_results"), ["assert f() == 1", "for _ in range(2):\n    assert f() == 1"])
    assert v.status == "ok" and v.passed == 0 and "PASS" in v.stdout, v


def test_an_object_equal_to_everything_does_not_pass(sbx):
    tests = ["assert f(1) == 2", "assert 2 == f(1)", "assert f(1) == g(1)", "assert abs(f(1) - 2.5) < 1e-6",
             "assert f(1)", "assert not not f(1)", "assert [f(1)] == [2]", "assert f(1) < 0",
             "for i in range(3):\n    assert f(i) == i"]
    v = sbx.run(hostile("liar"), tests)
    assert v.status == "ok" and v.passed == 0 and all("non-plain" in r for r in v.results), v
    humaneval = "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"
    v = sbx.run(hostile("liar"), humaneval, entry_point="total")
    assert v.passed == 0 and v.total == 2, v


def test_patched_builtins_modules_and_harness_do_not_pass(sbx):
    tests = ["assert f(1) == 2", "assert abs(f(1) - 2) < 1e-9", "import math\nassert math.isclose(f(1), 2)",
             "from math import isclose\nassert isclose(f(1), 2)", "assert isinstance(f(1), str)",
             "assert f(1) == f(1) + 1"]
    code = hostile("patch_everything")
    v = sbx.run(code, tests)
    assert v.status == "ok" and v.passed == 0, v
    v = sbx.run(code.replace("return x  # WRONG", "return x + 1"), tests[:4])  # a right answer still passes
    assert v.all_passed, v


def test_a_patching_thread_left_running_does_not_pass(sbx):
    v = sbx.run(hostile("patching_thread"), ["x = f(1)\nimport math\nassert math.isclose(x, 2)"])
    assert v.status == "ok" and v.passed == 0, v


def test_concurrent_runs_are_independent(sbx):
    items = [(f"def f():\n    return {i}", [f"assert f() == {i if i % 3 else -1}"]) for i in range(12)]
    results: list[list[Verdict]] = []
    def grade() -> None:
        results.append(sbx.run_many(items, workers=3))

    threads = [threading.Thread(target=grade) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    for verdicts in results:
        assert [v.passed for v in verdicts] == [0 if i % 3 == 0 else 1 for i in range(12)]


def test_a_hundred_runs_leave_nothing_behind(sbx, bare):
    dirs_before, cgroups_before = our_tempdirs(), our_cgroups()
    kids_before = set(descendants(os.getpid()))
    items = [(f"def f():\n    return {i}", [f"assert f() == {i}"]) for i in range(100)]
    verdicts = sbx.run_many(items, workers=4)
    makes_dirs = ("import os\nos.makedirs('a/b')\ndef f():\n    return 1", ["assert f() == 1"])
    verdicts += bare.run_many([makes_dirs] * 5)  # namespace-less runs use host temp dirs: removed too
    assert all(v.all_passed for v in verdicts), [v for v in verdicts if not v.all_passed][:2]
    assert set(descendants(os.getpid())) <= kids_before
    assert sandbox_procs() == []
    # other sessions may be grading at the same time: nothing new may be left, theirs may come and go
    assert our_tempdirs() <= dirs_before and set(our_cgroups()) <= set(cgroups_before)


def test_the_process_scan_sees_a_running_sandbox(sbx):
    need(sbx, "uid")  # otherwise sandbox_procs() would have nothing to find
    box: list[Verdict] = []
    code = "import time\ndef f():\n    return 1\ntime.sleep(1.5)"
    t = threading.Thread(target=lambda: box.append(sbx.run(code, ["assert f() == 1"])))
    t.start()
    deadline, seen = time.monotonic() + 5, []
    while not seen and time.monotonic() < deadline:
        seen = sandbox_procs()
        time.sleep(0.01)
    t.join()
    assert seen and box[0].all_passed and sandbox_procs() == []


def test_process_level_drops_to_a_fresh_uid_when_the_interpreter_allows(tmp_path):
    """Namespaces off, with an interpreter every user can read (the venv's may live under a 0700
    /root): the worker still runs as a fresh unprivileged uid and a daemon dies with the run."""
    system = "/usr/bin/python3"
    if not os.path.exists(system) or os.geteuid() != 0:
        pytest.skip(f"needs root and {system} (an interpreter outside /root)")
    sandbox = Sandbox(LIMITS, namespaces=False, cgroups=False, python=system, uids=UIDS)
    need(sandbox, "uid")
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    code = f"""import os, sys
def f():
    return 1
uid = os.getuid()
try:
    leaked = open({str(secret)!r}).read()
except OSError:
    leaked = ""
if os.fork() == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, "-S", "-c", "import time; time.sleep(30)"])
"""
    dirs = our_tempdirs()
    v = sandbox.run(code, ["assert uid != 0", "assert leaked == ''", "assert f() == 1"], timeout=10)
    assert v.all_passed, v
    assert sandbox_procs() == [] and our_tempdirs() <= dirs
