"""The sandbox object: probe the layers once, then grade programs one at a time or in parallel.

``Sandbox(limits, min_level)`` probes, at construction, every layer this machine allows and logs
the level it reached; ``min_level`` refuses to grade below it (``SandboxUnavailable`` names the
reached and the required level and why the missing layers are missing). Levels, weakest first:

- "process": a fresh ``python -I`` per program, empty working directory, cleared environment, no
  stdin, rlimits (CPU, address space, file size, open files, processes), a wall-clock kill of the
  whole process group, capped output; plus an unprivileged uid when the interpreter is readable
  by other users (root ignores RLIMIT_NPROC and can read everything).
- "seccomp": process + a seccomp filter (no sockets but AF_UNIX, no namespace/mount/ptrace calls).
- "namespaces": process + net, pid, mount (read-only root, private /tmp), ipc and uts namespaces
  through util-linux ``unshare``, and an unprivileged uid. The pid namespace's init is the
  trusted supervisor, so killing it (or its exit) kills every daemon left inside.
- "full": namespaces + seccomp + per-run cgroups (memory and pids limits, OOM detection).

Seccomp, where it works, is applied at every level (it is the fallback where namespaces are
refused, and costs about a millisecond). Each run gets a fresh random uid, so runs cannot signal
each other, RLIMIT_NPROC is per run, and a process left over in a namespace-less run can still
be found (by uid) and killed. A non-root caller gets ``unshare --user --map-root-user`` and keeps
its own uid (not exercised by the tests, which run as root). bubblewrap is not used. The probe
(three tiny runs, ~0.2 s) is cached per interpreter, switches and limits within a process.
Thread-safe: ``run`` shares nothing between calls; ``run_many`` is a bounded thread pool.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from r1lab.rewards.sandbox import cgroups as cg
from r1lab.rewards.sandbox.plan import Plan, build_plan
from r1lab.rewards.sandbox.runner import Raw, launch
from r1lab.rewards.sandbox.verdict import Verdict, make_verdict

log = logging.getLogger("r1lab.rewards.sandbox")
LEVELS = ("process", "seccomp", "namespaces", "full")
HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py")
PREFIX = cg.PREFIX
RESULT_CAP = 8 << 20
UIDS = range(1_000_000, 1_001_000_000)
UNSHARE_FLAGS = ["--net", "--pid", "--fork", "--mount", "--ipc", "--uts", "--mount-proc",
                 "--kill-child=SIGKILL"]


class SandboxUnavailable(RuntimeError):
    """The machine cannot give the sandbox level that was asked for."""


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits."""

    cpu_seconds: int = 10  # RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    memory_mb: int = 1024  # RLIMIT_AS, and the cgroup memory limit of the whole tree
    file_size_mb: int = 16  # RLIMIT_FSIZE
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC for the run's own uid, and the cgroup pids.max (threads count)
    output_bytes: int = 1 << 20  # stdout + stderr; past it the tree is killed ("output_limit")
    tmpfs_mb: int = 64  # size of the private /tmp (namespace level)
    tail_chars: int = 2000  # how much of stdout/stderr a Verdict keeps


class Program(NamedTuple):
    """One item for ``Sandbox.run_many``."""

    code: str
    tests: list[str] | str
    entry_point: str | None = None
    timeout: float | None = None


_probe_cache: dict = {}
_probe_lock = threading.Lock()


def _reachable_by_others(paths: list[str]) -> str:
    """"" when every directory on the way to ``paths`` is searchable by others, else the first that is not."""
    for path in paths:
        cur = "/"
        for name in os.path.realpath(path).strip("/").split("/"):
            if not os.stat(cur).st_mode & stat.S_IXOTH:
                return cur
            cur = os.path.join(cur, name)
    return ""


def _interpreter_paths(python: str, site_dirs: list[str] | None) -> list[str]:
    """Directories a program's interpreter reads: this one's from ``sys``; another's by asking it."""
    own = [os.path.dirname(os.path.realpath(python))]
    if site_dirs is not None:
        return [*own, sys.prefix, sys.base_prefix, *site_dirs]
    query = "import sys; print('\\n'.join([sys.prefix, sys.base_prefix, *sys.path]))"
    try:
        out = subprocess.run([python, "-I", "-c", query], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return own
    return own + [p for p in out.splitlines() if p and os.path.isdir(p)]


def level_of(layers: dict[str, str]) -> str:
    """The highest level whose layers are all on."""
    on = {name for name, state in layers.items() if state.startswith("on")}
    if {"namespaces", "seccomp", "cgroups"} <= on:
        return "full"
    if "namespaces" in on:
        return "namespaces"
    return "seccomp" if "seccomp" in on else "process"


_NS_PROBE = """
import errno, os, socket
def net_blocked():
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", 9))
    except OSError as exc:
        return exc.errno in (errno.ENETUNREACH, errno.EPERM, errno.EACCES)
    return False
"""
_NS_TESTS = ["assert net_blocked()", "assert os.getppid() == 1", "assert os.listdir('/tmp') == ['work']",
             "assert os.statvfs('/').f_flag & os.ST_RDONLY"]
_SECCOMP_PROBE = """
import socket
def denied(family):
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
    except PermissionError:
        return True
    return False
"""
_SECCOMP_TESTS = ["assert denied(socket.AF_INET)", "assert denied(socket.AF_INET6)",
                  "assert not denied(socket.AF_UNIX)"]
_SECCOMP_ON = "on: BPF filter (sockets but AF_UNIX, namespace/mount/ptrace/bpf/io_uring calls)"


class Sandbox:
    """Grades programs against tests in isolated processes; see the module docstring.

    ``namespaces``/``seccomp``/``cgroups`` = False switch a layer off (for comparisons and tests);
    ``python`` is the interpreter the programs run under (default: this one); each run's uid is
    drawn at random from ``uids`` (default ``UIDS``: no account on an ordinary machine owns them).
    """

    def __init__(self, limits: Limits | None = None, min_level: str = "process", *, namespaces: bool = True,
                 seccomp: bool = True, cgroups: bool = True, python: str | None = None,
                 uids: range | None = None):
        if min_level not in LEVELS:
            raise ValueError(f"min_level must be one of {LEVELS}, got {min_level!r}")
        self.limits = limits or Limits()
        self.uids = uids or UIDS
        self.python = python or sys.executable
        self.root = os.geteuid() == 0
        self._unshare = shutil.which("unshare") or ""
        # this interpreter: skip `site` in the child and pass its site-packages (see _harness)
        same = os.path.realpath(self.python) == os.path.realpath(sys.executable)
        self._site = site.getsitepackages() if same else None
        self._ns, self._seccomp, self._drop_uid = False, False, False
        self._cgroups: cg.Cgroups | None = None
        self.level = "probe"
        self.layers = self._probe(namespaces, seccomp, cgroups)
        self.level = level_of(self.layers)
        log.info("code sandbox: level %r (%s)", self.level,
                 "; ".join(f"{k} {v}" for k, v in self.layers.items()))
        if LEVELS.index(self.level) < LEVELS.index(min_level):
            missing = "; ".join(f"{k}: {v}" for k, v in self.layers.items() if not v.startswith("on"))
            raise SandboxUnavailable(f"the code sandbox reached level {self.level!r} but "
                                     f"min_level={min_level!r} is required ({missing})")

    # ------------------------------------------------------------------ probing

    def _probe(self, namespaces: bool, seccomp: bool, cgroups: bool) -> dict[str, str]:
        key = (self.python, namespaces, seccomp, cgroups, self.root, self.limits)
        with _probe_lock:
            if key not in _probe_cache:
                layers = self._probe_uncached(namespaces, seccomp, cgroups)
                _probe_cache[key] = (layers, self._ns, self._seccomp, self._drop_uid, self._cgroups)
            layers, self._ns, self._seccomp, self._drop_uid, self._cgroups = _probe_cache[key]
        return dict(layers)

    def _probe_uncached(self, namespaces: bool, seccomp: bool, cgroups: bool) -> dict[str, str]:
        """Each layer's state; sets the switches ``_execute`` reads as it goes (probes run through it)."""
        layers = {"process": "on: python -I, rlimits, process-group kill, output cap"}
        blocked = _reachable_by_others(_interpreter_paths(self.python, self._site))
        self._drop_uid = self.root and not blocked
        if not self.root:
            layers["uid"] = f"on: runs as the caller's unprivileged uid {os.geteuid()}"
        elif blocked:
            layers["uid"] = f"unavailable without namespaces: {blocked} is not searchable by others"
        else:
            layers["uid"] = "on: a fresh random uid per run"
        layers["namespaces"] = self._probe_namespaces() if namespaces else "off"
        if layers["namespaces"].startswith("on"):
            self._ns, self._drop_uid = True, self.root
            layers["uid"] = "on: a fresh random uid per run" if self.root else layers["uid"]
        if seccomp:
            v = self._execute(_SECCOMP_PROBE, build_plan(_SECCOMP_TESTS, _SECCOMP_PROBE), 30.0, True)
            self._seccomp = v.all_passed
            layers["seccomp"] = _SECCOMP_ON if v.all_passed else f"unavailable: {v.detail or v.results}"
        else:
            layers["seccomp"] = "off"
        if cgroups:
            found, why = cg.probe()
            if found is not None:
                self._cgroups = found
                v = self._execute("x = 1", build_plan(["assert x == 1"], "x = 1"), 30.0, self._seccomp)
                if not v.all_passed:
                    self._cgroups, why = None, f"a run could not join them: {v.detail}"
            layers["cgroups"] = f"on: {why}" if self._cgroups else f"unavailable: {why}"
        else:
            layers["cgroups"] = "off"
        return layers

    def _probe_namespaces(self) -> str:
        if not self._unshare:
            return "unavailable: util-linux `unshare` is not installed (bubblewrap is not supported)"
        saved = self._drop_uid
        self._ns, self._drop_uid = True, self.root
        tests = _NS_TESTS + (["assert os.getuid() != 0"] if self.root else [])
        try:
            v = self._execute(_NS_PROBE, build_plan(tests, _NS_PROBE), 30.0, seccomp_on=False)
        finally:
            self._ns, self._drop_uid = False, saved
        if not v.results or v.status != "ok" or any(r != "pass" for i, r in enumerate(v.results) if i != 3):
            return f"unavailable: {v.detail or v.results} {v.stderr[-300:]}".strip()
        ro = "on" if v.results[3] == "pass" else "unavailable"
        return f"on: unshare (net, pid, mount, ipc, uts); private /tmp; read-only root {ro}"

    # ------------------------------------------------------------------ running

    def run(self, code: str, tests: list[str] | str, timeout: float = 10.0,
            entry_point: str | None = None) -> Verdict:
        """Run ``code`` then ``tests`` in a fresh sandbox; never raises for anything the program does.

        ``tests``: a list of assert statements, a HumanEval ``test`` text with ``entry_point``, or a
        script of asserts (see ``plan``). ValueError if the tests themselves do not parse.
        """
        return self._execute(code, build_plan(tests, code, entry_point), timeout, seccomp_on=self._seccomp)

    def run_many(self, items: list[Program] | list[tuple], workers: int = 4,
                 timeout: float = 10.0) -> list[Verdict]:
        """``run`` over many programs on a pool of ``workers`` threads; verdicts in input order.
        Items are ``Program``s or tuples ``(code, tests[, entry_point[, timeout]])``."""
        programs = [p if isinstance(p, Program) else Program(*p) for p in items]
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sandbox") as pool:
            futures = [pool.submit(self.run, p.code, p.tests, p.timeout or timeout, p.entry_point)
                       for p in programs]
            return [f.result() for f in futures]

    def _execute(self, code: str, plan: Plan, timeout: float, seccomp_on: bool) -> Verdict:
        """One run: a fresh uid, cgroup and working directory; launch; clean up; judge."""
        lim, nonce = self.limits, secrets.token_hex(16)
        uid = self.uids[secrets.randbelow(len(self.uids))] if self._drop_uid else None
        group, workdir = None, "/tmp/work"
        try:
            group = self._cgroups.create(lim.memory_mb << 20, lim.processes + 1) if self._cgroups else None
            if not self._ns:
                workdir = tempfile.mkdtemp(prefix=PREFIX)
                if uid is not None:
                    os.chown(workdir, uid, uid)
        except OSError as exc:  # the machine's fault, not the program's: an error verdict, no raise
            if group:
                group.destroy()
            raw = Raw(start_error=f"cannot prepare the run: {exc}")
            return make_verdict(raw, plan, nonce, {}, False, self.level, lim.tail_chars)
        payload = {"nonce": nonce, "ns": self._ns, "uid": uid, "seccomp": seccomp_on, "workdir": workdir,
                   "cgroup_name": os.path.basename(group.dirs[0]) if group else "", "tmpfs_mb": lim.tmpfs_mb,
                   "limits": {"cpu_seconds": lim.cpu_seconds, "memory_mb": lim.memory_mb,
                              "file_size_mb": lim.file_size_mb, "open_files": lim.open_files,
                              "processes": lim.processes},
                   "code": code, "pre": plan.pre, "steps": plan.steps, "site": self._site or [],
                   "deadline": timeout + 2.0}
        try:
            raw = launch(self._argv(), self._env(workdir), payload, timeout, lim.output_bytes,
                         lim.tail_chars * 4, RESULT_CAP, group.procs if group else [], self._ns)
        finally:
            oom = group.oom_killed() if group else False
            if group:
                group.destroy()
            if uid is not None and not self._ns:
                kill_uid(uid)
            if not self._ns:
                shutil.rmtree(workdir, ignore_errors=True)
        expect = {"uid": uid, "seccomp": seccomp_on, "ns": self._ns,
                  "cgroups": len(group.dirs) if group else 0}
        return make_verdict(raw, plan, nonce, expect, oom, self.level, lim.tail_chars)

    def _argv(self) -> list[str]:
        prefix = []
        if self._ns:
            prefix = [self._unshare, *UNSHARE_FLAGS] + ([] if self.root else ["--user", "--map-root-user"])
        flags = ["-I", "-S", "-B", "-u"] if self._site is not None else ["-I", "-B", "-u"]
        return [*prefix, self.python, *flags, HARNESS]

    @staticmethod
    def _env(workdir: str) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
                "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def kill_uid(uid: int, patience: float = 2.0) -> int:
    """SIGKILL every process whose real or effective uid is ``uid`` until none is left; how many."""
    killed, deadline = 0, time.monotonic() + patience
    while time.monotonic() < deadline:
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status") as f:
                    text = f.read()
            except OSError:
                continue
            uids = next((ln.split()[1:3] for ln in text.splitlines() if ln.startswith("Uid:")), [])
            zombie = "\nState:\tZ" in text
            if str(uid) in uids and not zombie:
                found.append(int(name))
        if not found:
            return killed
        for pid in found:
            try:
                os.kill(pid, 9)
                killed += 1
            except ProcessLookupError:
                pass
    return killed
