"""Start one sandboxed process tree, feed it its payload, read it under caps and a deadline, kill it.

``launch(argv, env, payload, timeout, output_cap, tail, result_cap, cgroup_procs, via_unshare)
-> Raw``. The child gets the payload on stdin (``marshal``-ed: plain data from the parent, and
no ``re`` import on the child's side) and a result pipe (its fd number is put into the payload).
When the run has cgroups, the harness process is moved into them before the payload is sent
(the harness forks only after reading it), so the move overlaps the interpreter's start. One selector
loop writes the payload and reads stdout, stderr and the result pipe as they come; it keeps
only the last ``tail`` bytes of each stream and counts the rest, so a program that prints 1 GB
costs the parent ``tail`` bytes of memory: past ``output_cap`` bytes (or ``result_cap`` on the
result pipe) the tree is killed. The process is started in a new session; on the deadline, a
cap, or its exit (seen through a pidfd, before it is reaped, so the group id cannot have been
reused) the whole process group gets SIGKILL. Thread-safe: nothing is shared between calls.
"""

from __future__ import annotations

import marshal
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

GRACE = 0.5  # seconds to drain pipes after the process exited (its group has been killed by then)


@dataclass
class Raw:
    """What one launch produced, before any judging."""

    returncode: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    results: bytes = b""
    output_bytes: int = 0
    timed_out: bool = False
    output_over: bool = False
    results_over: bool = False
    seconds: float = 0.0
    start_error: str = ""


def _exited(pid: int) -> bool:
    """Has ``pid`` exited? Does not reap it (the pid and its group id stay reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _supervisor_pid(proc: subprocess.Popen, via_unshare: bool, deadline: float) -> int:
    """The harness's pid: ``proc`` itself, or the child ``unshare --fork`` made (0 if it never came)."""
    if not via_unshare:
        return proc.pid
    path = f"/proc/{proc.pid}/task/{proc.pid}/children"
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                kids = f.read().split()
        except OSError:
            return 0
        if kids:
            return int(kids[0])
        if _exited(proc.pid):
            return 0
        time.sleep(0.0005)
    return 0


def _join_cgroups(pid: int, procs: list[str]) -> str:
    """Move ``pid`` into each cgroup.procs file; "" or the error. Done before the payload is sent,
    so every process of the run (the harness forks only after reading it) starts inside."""
    try:
        for path in procs:
            with open(path, "w") as f:
                f.write(str(pid))
    except OSError as exc:
        return f"cannot move the harness into {path}: {exc}"
    return ""


def launch(argv: list[str], env: dict[str, str], payload: dict, timeout: float, output_cap: int,
           tail: int, result_cap: int, cgroup_procs: list[str] = (), via_unshare: bool = False) -> Raw:
    """Run ``argv`` with ``payload`` (plus the result fd) on stdin; see the module docstring."""
    raw = Raw()
    start = time.monotonic()
    r, w = os.pipe()
    try:
        data = marshal.dumps({**payload, "fd": w})
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w,), env=env, cwd="/", start_new_session=True)
    except OSError as exc:
        os.close(r)
        raw.start_error = f"cannot start {argv[0]}: {exc}"
        return raw
    finally:
        os.close(w)
    sel = selectors.DefaultSelector()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        deadline = start + timeout
        if cgroup_procs:
            pid = _supervisor_pid(proc, via_unshare, deadline)
            raw.start_error = _join_cgroups(pid, cgroup_procs) if pid else "the harness did not start"
            if raw.start_error:  # never let it run outside its cgroups; keep its stderr for the reason
                _killpg(proc.pid)
                data, deadline = b"", min(deadline, time.monotonic() + 1.0)
        _pump(proc, sel, pidfd, r, data, deadline, raw, (output_cap, tail, result_cap))
    finally:
        _killpg(proc.pid)  # not reaped yet, so the group id is still ours even if it has exited
        proc.kill()
        proc.wait()
        raw.returncode = proc.returncode
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        os.close(r)
        if pidfd >= 0:
            os.close(pidfd)
        raw.seconds = time.monotonic() - start
    return raw


def _take(raw: Raw, results: bytearray, fd: int, chunk: bytes, fds: tuple[int, int, int],
          caps: tuple[int, int, int]) -> bool:
    """Account one chunk read from ``fd``; True when a cap was passed (the caller stops)."""
    out_fd, _, res_fd = fds
    output_cap, tail, result_cap = caps
    if fd == res_fd:
        results += chunk
        raw.results_over = len(results) > result_cap
        return raw.results_over
    raw.output_bytes += len(chunk)
    if fd == out_fd:
        raw.stdout = (raw.stdout + chunk)[-tail:]
    else:
        raw.stderr = (raw.stderr + chunk)[-tail:]
    raw.output_over = raw.output_bytes > output_cap
    return raw.output_over


def _pump(proc: subprocess.Popen, sel: selectors.BaseSelector, pidfd: int, r: int, data: bytes,
          deadline: float, raw: Raw, caps: tuple[int, int, int]) -> None:
    """The selector loop of ``launch``: until EOF everywhere, the deadline, a cap, or exit + GRACE."""
    fds = (proc.stdout.fileno(), proc.stderr.fileno(), r)
    in_fd = proc.stdin.fileno()
    for fd in (*fds, in_fd):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_WRITE if fd == in_fd else selectors.EVENT_READ)
    if pidfd >= 0:
        sel.register(pidfd, selectors.EVENT_READ)
    reading, results, sent, exited_at = set(fds), bytearray(), 0, None
    try:
        while reading:
            now = time.monotonic()
            if now >= deadline:
                raw.timed_out = True
                return
            if exited_at is not None and now - exited_at > GRACE:
                return
            wait = min(deadline - now, GRACE if exited_at is not None or pidfd >= 0 else 0.01)
            for key, _ in sel.select(wait):
                fd = key.fd
                if fd == in_fd:
                    try:
                        sent += os.write(in_fd, data[sent:sent + 65536])
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:
                        sent = len(data)
                    if sent >= len(data):
                        sel.unregister(in_fd)
                        proc.stdin.close()
                elif fd == pidfd:
                    sel.unregister(pidfd)
                    exited_at = time.monotonic()
                    _killpg(proc.pid)  # leftovers of the group; the tree's own supervisor did the rest
                else:
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        sel.unregister(fd)
                        reading.discard(fd)
                    elif _take(raw, results, fd, chunk, fds, caps):
                        return
            if pidfd < 0 and exited_at is None and _exited(proc.pid):
                exited_at = time.monotonic()
                _killpg(proc.pid)
    finally:
        raw.results = bytes(results)
