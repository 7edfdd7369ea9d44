"""From what a sandboxed run left behind to a verdict, and from a verdict to a reward (pure).

``make_verdict(raw, plan, nonce, expect, oom, level) -> Verdict`` reads only the result pipe's
lines that carry the run's nonce; the exit code never counts. A test passes only through its own
result line: "pass" from the child for a "check" test, or a value the parent's ``judge`` accepts
for a "value" test. A missing line is a fail; a second line for the same test, an unknown kind,
a malformed line, or a "start" line whose layers differ from what the sandbox promised (uid,
seccomp, cgroups, mounts) make the whole run an "error". ``score(verdict)`` is the fraction of
tests passed, and 0 whenever the status is not "ok".

Statuses: ok, timeout (wall clock or the CPU rlimit), memory (MemoryError, the address-space
rlimit, or the cgroup's OOM killer), output_limit (stdout+stderr past the cap), error (the
program raised or exited before the tests finished, set-up failed, tampering, a sandbox layer
missing), crash (killed by a signal such as SIGSEGV).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from r1lab.rewards.sandbox.plan import Plan, judge, parse_line
from r1lab.rewards.sandbox.runner import Raw

STATUSES = ("ok", "timeout", "memory", "output_limit", "error", "crash")


@dataclass(frozen=True)
class Verdict:
    """The graded outcome of one program. ``results[i]`` is "pass", "fail: why" or "missing"."""

    passed: int
    total: int
    status: str
    detail: str = ""
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    results: tuple[str, ...] = ()
    level: str = ""

    @property
    def all_passed(self) -> bool:
        return self.status == "ok" and self.total > 0 and self.passed == self.total


def score(verdict: Verdict) -> float:
    """Fraction of tests passed; 0.0 when anything went wrong (status other than "ok") or no tests."""
    if verdict.status != "ok" or verdict.total <= 0:
        return 0.0
    return verdict.passed / verdict.total


def read_lines(data: bytes, nonce: str) -> tuple[list[tuple[str, list]], list[str]]:
    """(kind, fields) of each line marked with ``nonce``, and the problems found on the way."""
    events, problems = [], []
    mark = nonce.encode() + b" "
    for line in data.split(b"\n"):
        if not line.startswith(mark):
            continue
        try:
            kind, _, payload = line[len(mark):].decode("utf-8").partition(" ")
            events.append((kind, parse_line(payload)))
        except (UnicodeDecodeError, ValueError) as exc:
            problems.append(f"malformed result line ({exc})")
    return events, problems


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _collect(events: list[tuple[str, list]], plan: Plan, problems: list[str]) -> dict:
    """Per-test results and the control lines; duplicates and strays become ``problems``."""
    total = len(plan.tests)
    out: dict = {"results": ["missing"] * total, "memory": False}
    seen: set = set()
    for kind, fields in events:
        if kind in ("test", "value"):
            i = fields[0] if fields and type(fields[0]) is int else -1
            # a value test gets a "value" line, or a "test" line when evaluating it raised: never a pass
            own = plan.tests[i].kind if 0 <= i < total else ""
            wrong_kind = (own == "check" and kind == "value") or (own == "value" and fields[1:2] == ["pass"])
            if not 0 <= i < total or i in seen or wrong_kind:
                problems.append(f"unexpected or repeated result for test {i}")
                continue
            seen.add(i)
            if kind == "value":
                ok, why = judge(plan.tests[i], fields[1]) if len(fields) == 2 else (False, "no value")
                out["results"][i] = "pass" if ok else f"fail: {why}"
            else:
                outcome = fields[1] if len(fields) == 3 else "fail"
                out["memory"] |= outcome == "memory"
                out["results"][i] = "pass" if outcome == "pass" else f"fail: {fields[-1]}"
        elif kind in ("start", "mounts", "program", "setup", "isolation", "done", "exit"):
            if kind in out:
                problems.append(f"repeated {kind!r} line")
            out[kind] = fields
        else:
            problems.append(f"unknown result kind {kind!r}")
    if "program" in out and out["program"] and out["program"][0] == "memory":
        out["memory"] = True
    return out


def _layer_problem(got: dict, expect: dict) -> str:
    start = got.get("start")
    if start is None:
        return ""
    uid, seccomp, cgroups = (start + [None, None, None])[:3]
    if expect.get("uid") is not None and uid != expect["uid"]:
        return f"the worker runs as uid {uid}, not the unprivileged uid {expect['uid']}"
    if expect.get("seccomp") and seccomp != "on":
        return f"seccomp did not come up: {seccomp}"
    if cgroups != expect.get("cgroups", 0):
        return f"joined {cgroups} cgroups, expected {expect.get('cgroups', 0)}"
    if expect.get("ns") and "mounts" not in got:
        return "no private mounts in the namespace"
    return ""


def _failure(raw: Raw, got: dict, problems: list[str], oom: bool, expect: dict) -> tuple[str, str]:
    """(status, detail) of a run, the first matching cause in order of precedence."""
    if raw.start_error:
        return "error", raw.start_error
    if raw.output_over:
        return "output_limit", f"stdout+stderr passed the cap after {raw.output_bytes} bytes"
    if raw.results_over:
        return "error", "the result pipe was flooded"
    if oom or got["memory"]:
        return "memory", "the cgroup's OOM killer acted" if oom else "MemoryError (address-space limit)"
    if raw.timed_out:
        return "timeout", f"killed at the wall-clock limit ({raw.seconds:.2f} s)"
    if problems:
        return "error", "tampering suspected: " + "; ".join(problems[:3])
    if "isolation" in got:
        return "error", f"sandbox set-up failed: {got['isolation'][0]}"
    layer = _layer_problem(got, expect)
    if layer:
        return "error", f"sandbox layer missing in this run: {layer}"
    if "setup" in got:
        return "error", f"test set-up failed: {got['setup'][0]}"
    if "program" in got:
        return "error", f"the program raised before the tests: {got['program'][-1]}"
    if "done" not in got:
        status = got.get("exit", [None])[0]
        if type(status) is int and status >= 0 and os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU:
                return "timeout", "killed at the CPU-time limit (SIGXCPU)"
            return "crash", f"killed by {_signal_name(sig)}"
        if type(status) is int and status >= 0:
            return "error", f"the program exited (code {os.WEXITSTATUS(status)}) before the tests finished"
        if raw.returncode is not None and raw.returncode < 0:
            return "crash", f"sandbox killed by {_signal_name(-raw.returncode)}"
        return "error", f"no result from the harness (exit code {raw.returncode})"
    return "ok", ""


def make_verdict(raw: Raw, plan: Plan, nonce: str, expect: dict, oom: bool, level: str, tail: int) -> Verdict:
    """The verdict of one run (see the module docstring)."""
    events, problems = read_lines(raw.results, nonce)
    got = _collect(events, plan, problems)
    status, detail = _failure(raw, got, problems, oom, expect)
    results = tuple(got["results"])
    return Verdict(passed=sum(r == "pass" for r in results), total=len(results), status=status, detail=detail,
                   stdout=raw.stdout.decode("utf-8", "replace")[-tail:],
                   stderr=raw.stderr.decode("utf-8", "replace")[-tail:],
                   seconds=round(raw.seconds, 4), results=results, level=level)
