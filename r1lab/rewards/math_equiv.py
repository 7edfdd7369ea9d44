"""Is a predicted math answer equivalent to the gold one? math-verify in a killable worker process.

``math_equal(pred, gold, timeout)`` and ``math_equal_many(pairs, timeout)`` answer in three tiers:

1. **Fast path, in process, no sympy**: the two answers are identical after LaTeX clean-up
   (``normalize_latex``: outer ``$…$``/``\\boxed{}``, ``\\left``/``\\right``, spacing, ``\\dfrac``,
   whitespace except between letters, trailing period) -> True; both are plain numbers (``number_value``, exact
   fractions) -> equal values are True, two unequal integers are False.
2. **math-verify** (``parse`` + ``verify``, gold first) in a worker subprocess, each answer wrapped
   as ``\\boxed{…}`` (then ``$…$``, then bare) so LaTeX gold like ``\\left( 3, \\frac{\\pi}{2} \\right)``
   parses.
3. **Fallback** when the worker cannot start (math-verify missing): tier 1's answer, marked
   ``"grader unavailable"``.

Why a worker process: math-verify's own timeout uses ``signal.alarm``, which works only on the
main thread; off it math-verify raises or (in peers' wrappers) silently scores 0. Here the worker
is a plain subprocess that speaks JSON lines over pipes, so the caller may be any thread, any
process start method, any ``__main__``. Per item, two timeouts guard it:

- soft: the worker arms ``setitimer`` for ``soft_fraction·timeout`` (its main thread, so signals
  work) and answers "timeout" itself; cheap, the worker lives on;
- hard: the parent waits at most ``timeout`` for each answer, else kills the worker (covers C code
  that never yields to the signal) and starts a fresh one for the rest of the batch.

A batch is one request; the answers stream back one per item, so each item keeps its own
deadline. A timeout or crash gives False and is counted in ``grader_stats()``; nothing hangs.
Worker start-up (importing sympy, ~1 s) is not charged to any item.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from r1lab.rewards.extract import find_boxed, number_value

MAX_CHARS = 5_000  # answers are cut to this length before any comparison
START_TIMEOUT = 120.0  # seconds to wait for a worker to import math-verify
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_SPACE_RE = re.compile(r" (?![A-Za-z])|(?<![A-Za-z]) ")
_SPACING = ("\\!", "\\,", "\\;", "\\:", "\\ ", "\\displaystyle", "\\quad")
_STAT_KEYS = ("pairs", "fast_path", "worker_items", "timeouts", "errors", "restarts", "unavailable")
_stats = dict.fromkeys(_STAT_KEYS, 0)
_stats_lock = threading.Lock()


def _count(key: str, n: int = 1) -> None:
    with _stats_lock:
        _stats[key] += n


def grader_stats() -> dict[str, int]:
    """Counters since import: pairs judged, fast-path answers, items sent to the worker,
    timeouts (soft + hard), other errors, worker restarts, answers given without math-verify."""
    with _stats_lock:
        return dict(_stats)


def normalize_latex(s: str) -> str:
    """Light, meaning-preserving clean-up of a LaTeX answer (for equality and majority voting)."""
    if not isinstance(s, str):
        return ""
    s = s.strip()[:MAX_CHARS]
    for _ in range(3):
        s = s.strip()
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$")
        elif s.startswith(("\\boxed", "\\fbox")) and s.endswith("}"):
            inner = find_boxed(s)
            if inner is None or len(inner) < len(s) - 9:  # not one box around everything
                break
            s = inner
    s = _LEFT_RIGHT_RE.sub("", s)
    for token in _SPACING:
        s = s.replace(token, " ")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACE_RE.sub("", " ".join(s.split()))  # keep only spaces between letters: "\\cdot y"
    return s.rstrip(".").strip()


def _quick(pred: str, gold: str) -> bool | None:
    """Tier 1 on normalised answers: True/False when sure without sympy, else None."""
    if pred == gold:
        return True
    a, b = number_value(pred, strict=True), number_value(gold, strict=True)
    if a is None or b is None:
        return None
    if a == b:
        return True
    integers = not any(c in s for s in (pred, gold) for c in "./")
    return False if integers else None


# --- the worker side ---------------------------------------------------------------------
class _SoftTimeout(BaseException):
    """Raised by the worker's timer; BaseException so ``except Exception`` in libraries lets it by."""


def _worker_main() -> None:
    """Worker loop: read a request line {"soft", "items"}, answer one line {"i","ok","e"} per item."""
    import logging
    import signal

    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    sys.stdout = sys.stderr
    logging.disable(logging.CRITICAL)

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj).encode() + b"\n")

    try:
        from math_verify import parse, verify
    except Exception as exc:  # not installed or broken: the parent falls back
        send({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return

    def on_alarm(signum, frame):
        raise _SoftTimeout

    signal.signal(signal.SIGALRM, on_alarm)

    def parse_any(x: str) -> list:
        for wrapped in (f"\\boxed{{{x}}}", f"${x}$", x):
            found = parse(wrapped, parsing_timeout=None)
            if found:
                return found
        return []

    def judge(pred: str, gold: str, soft: float) -> tuple[bool, str | None]:
        try:
            if soft > 0:
                signal.setitimer(signal.ITIMER_REAL, soft)
            try:
                g, p = parse_any(gold), parse_any(pred)
                return bool(g and p and verify(g, p, timeout_seconds=None)), None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            return False, "timeout"
        except Exception as exc:
            return False, f"error: {type(exc).__name__}"

    # Warm up before saying ready: the first LaTeX parse and the first sympy comparison pay
    # lazy initialisation (ANTLR parser, sympy caches) that must not count against an item.
    judge("\\frac{1}{2} + \\sqrt{8}", "(x-1)(x+1)", 0.0)
    judge("x^2-1", "(x-1)(x+1)", 0.0)
    send({"ready": True})
    for line in sys.stdin.buffer:
        request = json.loads(line)
        for i, (pred, gold) in enumerate(request["items"]):
            ok, err = judge(pred, gold, float(request["soft"]))
            send({"i": i, "ok": ok, "e": err})


# --- the parent side ---------------------------------------------------------------------
class Grader:
    """One math-verify worker subprocess, started lazily, killed and restarted on a hard timeout.

    ``run(pairs, timeout) -> [(equal, error_or_None)]`` for (pred, gold) pairs. Thread-safe
    (calls are serialised); safe after ``fork`` (a child starts its own worker).
    """

    def __init__(self, soft_fraction: float = 0.8, start_timeout: float = START_TIMEOUT):
        self.soft_fraction = soft_fraction
        self.start_timeout = start_timeout
        self.unavailable: str | None = None  # reason the worker cannot run, once known
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0
        self._ready = False
        self._buf = b""
        self._start_failures = 0
        self.worker_code = "from r1lab.rewards.math_equiv import _worker_main; _worker_main()"

    # process management
    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-c", self.worker_code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._owner, self._ready, self._buf = os.getpid(), False, b""

    def _kill(self) -> None:
        proc, self._proc, self._ready = self._proc, None, False
        if proc is not None and self._owner == os.getpid():
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass

    def shutdown(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        with self._lock:
            self._kill()

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, None at the deadline; EOFError if the worker died."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("grader worker exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _ensure_ready(self) -> bool:
        if self.unavailable:
            return False
        if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
            if self._owner == os.getpid():
                self._kill()
            self._start()
        if self._ready:
            return True
        try:
            line = self._read_line(time.monotonic() + self.start_timeout)
            reply = json.loads(line) if line else {"error": "no answer in time"}
        except (EOFError, ValueError) as exc:
            reply = {"error": str(exc)}
        if reply.get("ready"):
            self._ready = True
            return True
        self._kill()
        self._start_failures += 1
        if self._start_failures >= 2 or "Error" in str(reply.get("error", "")):
            self.unavailable = f"math-verify worker did not start: {reply.get('error')}"
        return False

    # grading
    def _send(self, items: list[tuple[str, str]], timeout: float) -> bool:
        assert self._proc is not None and self._proc.stdin is not None
        request = {"soft": self.soft_fraction * timeout, "items": items}
        try:
            self._proc.stdin.write(json.dumps(request).encode() + b"\n")
            self._proc.stdin.flush()
            return True
        except OSError:
            self._kill()
            return False

    def run(self, pairs: Sequence[tuple[str, str]], timeout: float) -> list[tuple[bool, str | None]]:
        """Judge (pred, gold) pairs with math-verify; each pair gets at most ``timeout`` seconds."""
        items = [(str(p)[:MAX_CHARS], str(g)[:MAX_CHARS]) for p, g in pairs]
        out: list[tuple[bool, str | None]] = []
        with self._lock:
            failures = 0
            while len(out) < len(items):
                if failures > 3 or not self._ensure_ready() or not self._send(items[len(out) :], timeout):
                    failures += 1
                    if failures > 3 or self.unavailable:
                        out += self._fallback(items[len(out) :])
                    continue
                out += self._collect(len(items) - len(out), timeout)
        return out

    def _collect(self, n: int, timeout: float) -> list[tuple[bool, str | None]]:
        """Read up to ``n`` answers; stop early (worker killed) on a hard timeout or a crash."""
        got: list[tuple[bool, str | None]] = []
        while len(got) < n:
            try:
                line = self._read_line(time.monotonic() + timeout)
            except EOFError:
                line = b'{"ok": false, "e": "error: worker crashed"}'
                self._kill()
            if line is None:  # hard timeout: the worker is stuck in C code
                self._kill()
                self._start()  # warm up the replacement in the background
                _count("restarts")
                reply = {"ok": False, "e": "timeout"}
            else:
                reply = json.loads(line)
            err = reply.get("e")
            _count("worker_items")
            if err:
                _count("timeouts" if err == "timeout" else "errors")
            got.append((bool(reply.get("ok")), err))
            if self._proc is None or line is None:
                break
        return got

    def _fallback(self, items: list[tuple[str, str]]) -> list[tuple[bool, str | None]]:
        _count("unavailable", len(items))
        return [
            (bool(_quick(normalize_latex(p), normalize_latex(g))), "grader unavailable") for p, g in items
        ]


_GRADER = Grader()
atexit.register(_GRADER.shutdown)


def judge_many(pairs: Sequence[tuple[str, str]], timeout: float = 5.0) -> list[tuple[bool, str | None]]:
    """``[(equal, error)]`` for (pred, gold) pairs: error is None, "timeout", "error: …" or
    "grader unavailable". Fast-path answers never reach the worker."""
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    results: list[tuple[bool, str | None] | None] = [None] * len(pairs)
    todo: list[int] = []
    normed: list[tuple[str, str]] = []
    for k, (pred, gold) in enumerate(pairs):
        p, g = normalize_latex(pred), normalize_latex(gold)
        if not p or not g:
            results[k] = (False, None)
            continue
        quick = _quick(p, g)
        if quick is not None:
            results[k] = (quick, None)
            _count("fast_path")
        else:
            todo.append(k)
            normed.append((p, g))
    _count("pairs", len(pairs))
    if todo:
        for k, res in zip(todo, _GRADER.run(normed, timeout)):
            results[k] = res
    return [r if r is not None else (False, None) for r in results]


def math_equal(pred: str, gold: str, timeout: float = 5.0) -> bool:
    """Is ``pred`` mathematically equivalent to ``gold``? False on timeout (counted)."""
    return judge_many([(pred, gold)], timeout)[0][0]


def math_equal_many(pairs: Sequence[tuple[str, str]], timeout: float = 5.0) -> list[bool]:
    """``math_equal`` for many (pred, gold) pairs in one worker round trip; ``timeout`` per pair."""
    return [ok for ok, _ in judge_many(pairs, timeout)]


def shutdown_grader() -> None:
    """Stop the shared worker process now (it restarts on the next call)."""
    _GRADER.shutdown()
