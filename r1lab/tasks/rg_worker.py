"""The reasoning-gym scoring worker: ``score_answer`` out of the trainer's process, with limits.

    worker = worker_for("countdown", config={}, memory_mb=1024)
    worker.run([{"answer": "3*5+7", "entry": {...}}], timeout=3.0)   # -> [(score, error_or_None)]

Why: some reasoning-gym scorers execute model text — countdown and puzzle24 hand it to sympy's
``parse_expr``, which ``eval``s it (an answer ``__import__('os').system(...)`` runs); n_queens,
binary_matrix, spiral_matrix, string_insertion ``eval`` it — and sympy can hang or fill memory on
``10**10**10``. reasoning-gym's own training loops score in process; r1lab does not.

How: one worker subprocess per (dataset, config, memory limit), started lazily: ``python -I``
(no PYTHON* variables, no user site, no cwd on sys.path), its own session (process group), a fresh
temp dir as cwd and HOME, an environment of PATH/HOME/TMPDIR/LANG and thread counts only. Before
it reads any request it sets rlimits — address space ``memory_mb``, core files 0, written file
size 0 — imports reasoning-gym, scores one warm-up answer, then installs an audit hook that
refuses process creation (os.system, exec, spawn, fork, subprocess), signals (os.kill),
sockets, ctypes, file writes, deletions and renames, and further setrlimit; an item whose
scoring triggered a refusal scores 0 with the refused events in its error (scorers often swallow
the exception). Per item it re-arms RLIMIT_CPU (a backstop should the parent be gone) and a
soft wall-clock timer (``0.8·timeout``, raising a BaseException past the scorers' ``except
Exception``). The parent sends a batch as one JSON line and reads one reply line per item, each
within ``timeout`` seconds; on a hard timeout, a crash or a reply without the batch's nonce it
kills the worker's process group, counts the item 0 with the reason, and sends the rest of the
batch to a fresh worker. Nothing raises, nothing hangs.

What it contains: crashes, hangs, runaway memory, stray output and the stock hostile strings, away
from the trainer. What it does NOT contain — it is not a security sandbox: code running in the
worker can get around an audit hook (e.g. through the already-imported ``_posixsubprocess``, or by
walking frames to forge a reply), can read whatever the user can read, and runs as the user (as
root if the trainer runs as root). For untrusted code proper, use the code sandbox.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import math
import os
import pickle
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

START_TIMEOUT = 60.0  # seconds for a worker to import reasoning-gym and warm up
Score = tuple[float, "str | None"]  # (the dataset's score, error or None)


def plain_json(obj: Any) -> Any:
    """A JSON-only copy (tuples -> lists, numpy values -> numbers/lists, sets -> lists, else str)."""

    def default(x: Any) -> Any:
        if hasattr(x, "tolist"):
            return x.tolist()
        return sorted(x, key=str) if isinstance(x, (set, frozenset)) else str(x)

    return json.loads(json.dumps(obj, default=default))


# --- the parent side ---------------------------------------------------------------------
class ScoreWorker:
    """One scoring subprocess for one dataset config, started lazily, killed and restarted on a
    hard timeout, a crash or a bad reply. ``run(items, timeout) -> [(score, error)]``.
    Calls are serialised (thread-safe); after ``fork`` the child starts its own worker."""

    def __init__(self, spec: dict[str, Any]):
        self.spec, self.unavailable, self.restarts = json.dumps(spec), None, 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._home: str | None = None
        self._owner, self._ready, self._buf, self._start_failures = 0, False, b"", 0

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # this r1lab, installed or not
        home = self._home = tempfile.mkdtemp(prefix="r1lab-rg-")
        env = {"PATH": os.defpath, "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "MPLBACKEND": "Agg"}
        env.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"))
        code = f"import sys; sys.path.insert(0, {root!r}); import r1lab.tasks.rg_worker as m; "
        code += "m._worker_main()"
        self._proc = subprocess.Popen(  # -I: no PYTHON* variables, no user site, no cwd on sys.path
            [sys.executable, "-I", "-c", code, self.spec], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, cwd=home, env=env, close_fds=True, start_new_session=True,
        )
        self._owner, self._ready, self._buf = os.getpid(), False, b""

    def _kill(self) -> None:
        proc, self._proc, self._ready = self._proc, None, False
        if proc is None or self._owner != os.getpid():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: anything the worker started too
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, None at the deadline; EOFError if the worker died."""
        fd = self._proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("scoring worker exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _ensure_ready(self) -> bool:
        if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
            self._kill()
            self._start()
        if self._ready:
            return True
        try:
            line = self._read_line(time.monotonic() + START_TIMEOUT)
            reply = json.loads(line) if line else {"error": "no answer in time"}
        except (EOFError, ValueError) as exc:
            reply = {"error": str(exc)}
        self._ready = bool(reply.get("ready"))
        if self._ready:
            return True
        self._kill()
        self._start_failures += 1
        if self._start_failures >= 2 or "Error" in str(reply.get("error", "")):
            self.unavailable = f"scoring worker did not start: {reply.get('error')}"
        return False

    def _send(self, request: dict) -> bool:
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")  # type: ignore[union-attr]
            self._proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            self._kill()
        return self._proc is not None

    def run(self, items: list[dict], timeout: float) -> list[Score]:
        """Score items ``{"answer", "entry"}`` (a JSON entry) or ``{"answer", "pickled"}`` (base64 pickle of
        the original entry, made by the trusted parent); each gets at most ``timeout`` wall seconds."""
        out: list[Score] = []
        with self._lock:
            failures = 0
            while len(out) < len(items):
                if self.unavailable or failures > 3:
                    why = self.unavailable or "scoring worker keeps failing"
                    out += [(0.0, f"grader unavailable: {why}")] * (len(items) - len(out))
                    break
                nonce = secrets.token_hex(8)
                request = {"nonce": nonce, "timeout": timeout, "items": items[len(out) :]}
                if not self._ensure_ready() or not self._send(request):
                    failures += 1
                    continue
                out += self._collect(len(items) - len(out), nonce, timeout)
        return out

    def _collect(self, n: int, nonce: str, timeout: float) -> list[Score]:
        """Read up to ``n`` scores; stop early (worker killed, a fresh one starting) on a hard
        timeout, a crash or a reply that is not ours. Always returns at least one result."""
        got: list[Score] = []
        while len(got) < n:
            err: str | None = "timeout"
            try:
                line = self._read_line(time.monotonic() + timeout)
                if line is not None:
                    reply = json.loads(line)
                    err = "error: bad reply from scoring worker"
                    if reply.get("n") == nonce and reply.get("i") == len(got):
                        result = (float(reply["s"]), None if reply.get("e") is None else str(reply["e"]))
                        err = None
            except EOFError:
                err = "error: scoring worker died"
            except (ValueError, TypeError, AttributeError):
                err = "error: bad reply from scoring worker"
            if err is not None:
                got.append((0.0, err))
                self._kill()
                self._start()  # warm up the replacement while the caller goes on
                self.restarts += 1
                break
            got.append(result)
        return got


_WORKERS: dict[str, ScoreWorker] = {}
_WORKERS_LOCK = threading.Lock()


def worker_for(dataset: str, config: dict[str, Any], memory_mb: int) -> ScoreWorker:
    """The shared worker of one (dataset, config, memory limit)."""
    spec = {"dataset": dataset, "config": config, "memory_mb": memory_mb}
    key = json.dumps(spec, sort_keys=True)
    with _WORKERS_LOCK:
        if key not in _WORKERS:
            _WORKERS[key] = ScoreWorker(spec)
        return _WORKERS[key]


def shutdown_workers() -> None:
    """Stop every scoring worker now (the next call starts fresh ones)."""
    for worker in list(_WORKERS.values()):
        locked = worker._lock.acquire(timeout=5.0)  # a call in flight: kill it anyway after 5 s
        try:
            worker._kill()
        finally:
            if locked:
                worker._lock.release()


atexit.register(shutdown_workers)


# --- the worker side ---------------------------------------------------------------------
class _SoftTimeout(BaseException):
    """Raised by the worker's timer; BaseException so a scorer's ``except Exception`` lets it by."""


_BLOCKED_EVENTS = tuple(
    "os.system os.exec os.posix_spawn os.spawn os.fork os.kill os.killpg os.remove os.rename os.rmdir "
    "os.mkdir os.chmod os.chown os.link os.symlink os.truncate os.putenv os.unsetenv os.setxattr "
    "os.removexattr os.utime subprocess. pty. socket. ctypes. shutil. signal.pthread_kill urllib. http. "
    "ftplib. smtplib. webbrowser. sqlite3. resource.prlimit".split()
)
_BLOCKED_IMPORTS = set("ctypes _ctypes cffi _cffi_backend multiprocessing _multiprocessing pty mmap".split())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_REFUSED: list[str] = []  # events refused while the current item was scored


def _audit(event: str, args: tuple) -> None:
    """The worker's audit hook (installed after warm-up): refuse, and note, the usual side effects."""
    if event == "open":
        mode, flags = (tuple(args) + (None, None, None))[1:3]
        writes = isinstance(mode, str) and any(c in mode for c in "wax+")
        refuse = writes or (isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
    elif event == "import":
        refuse = bool(args) and str(args[0]).split(".")[0] in _BLOCKED_IMPORTS
    elif event == "resource.setrlimit":  # the worker re-arms its own RLIMIT_CPU per item
        refuse = not args or args[0] != resource.RLIMIT_CPU
    else:
        refuse = event.startswith(_BLOCKED_EVENTS)
    if refuse:
        if len(_REFUSED) < 10:
            _REFUSED.append(event)
        raise PermissionError(f"{event} is refused in the scoring worker")


def _worker_setup(spec: dict[str, Any]):
    """Limits, reasoning-gym, a warm-up score, then the audit hook; returns ``score(item, timeout)``."""
    sys.dont_write_bytecode = True
    memory = int(spec["memory_mb"]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with EFBIG instead of killing us
    from reasoning_gym.factory import create_dataset

    scorer = create_dataset(spec["dataset"], size=1, seed=0, **spec["config"])

    def on_alarm(signum, frame):
        raise _SoftTimeout

    def score(item: dict, timeout: float) -> Score:
        del _REFUSED[:]
        try:
            signal.signal(signal.SIGALRM, on_alarm)  # model text may have replaced the handler
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]  # CPU backstop, should the parent be gone:
            soft = int(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) + timeout) + 2
            soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
            signal.setitimer(signal.ITIMER_REAL, 0.8 * timeout)
            try:
                if "pickled" in item:  # the original entry, from the parent (trusted): tuples stay tuples
                    entry = pickle.loads(base64.b64decode(item["pickled"]))
                else:
                    entry = item["entry"]
                value = float(scorer.score_answer(item["answer"], entry))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if _REFUSED:  # the scorer swallowed the refusal: still 0, and say why
                return 0.0, "refused in the scoring worker: " + ", ".join(sorted(set(_REFUSED)))
            return (value, None) if math.isfinite(value) else (0.0, "error: score is not finite")
        except _SoftTimeout:
            return 0.0, "timeout"
        except BaseException as exc:  # SystemExit from exit() in model text, MemoryError, ...
            return 0.0, f"error: {type(exc).__name__}: {str(exc)[:200]}"

    first = scorer[0]
    score({"answer": first.get("answer") or "x", "entry": plain_json(first)}, 30.0)
    sys.addaudithook(_audit)
    return score


def _worker_main() -> None:
    """Worker loop: argv[1] is the spec; read {"nonce","timeout","items"} lines, answer one
    {"n","i","s","e"} line per item on the saved stdout (fd 1 then points at stderr: /dev/null)."""
    import logging

    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from scorers (or model text) must not reach the protocol
    sys.stdout = sys.stderr
    logging.disable(logging.CRITICAL)

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj).encode() + b"\n")

    try:
        score = _worker_setup(json.loads(sys.argv[1]))
    except BaseException as exc:
        send({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    send({"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        for i, item in enumerate(request["items"]):
            value, err = score(item, float(request["timeout"]))
            send({"n": request["nonce"], "i": i, "s": value, "e": err})
