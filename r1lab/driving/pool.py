"""Many driving episodes stepped in parallel: W worker processes, each holding a share of them.

Written by hand because gymnasium's ``AsyncVectorEnv`` runs one process per environment (a
group of 8 rollouts from 8 start states would be 64 processes on a 2-core machine) and resets
finished sub-environments itself, while GRPO needs each slot to stay on its start state until
the whole batch is done. Here slot i lives in worker i mod W; a step sends each worker the
anchors of its live slots and gets back their observations. ``workers=0`` runs everything in
this process (tests, debugging).

A slot whose simulator raises is finished as a failure inside ``Episode`` (never the run); a
worker that dies is reported with the slots it held.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

from r1lab.driving.env import Episode


def _handle(episodes: dict[int, Episode], cmd: str, payload: Any) -> Any:
    if cmd == "reset":
        out = {}
        for slot, kwargs in payload:
            if slot in episodes:
                episodes.pop(slot).close()
            episodes[slot] = Episode(**kwargs)
            out[slot] = episodes[slot].reset()
        return out
    if cmd == "decide":
        return {slot: episodes[slot].decide(int(a)) for slot, a in payload.items()}
    if cmd == "expert":
        out = {}
        for slot, kwargs in payload:
            ep = Episode(expert=True, **kwargs)
            out[slot] = (ep.expert_samples(), ep.summary())
            ep.close()
        return out
    if cmd == "summary":
        return {slot: episodes[slot].summary() for slot in payload}
    if cmd == "frames":
        return {slot: (episodes[slot].frames, episodes[slot].plans) for slot in payload}
    if cmd == "clear":
        for ep in episodes.values():
            ep.close()
        episodes.clear()
        return {}
    raise ValueError(f"unknown pool command {cmd!r}")


def _worker(conn) -> None:  # noqa: ANN001
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    episodes: dict[int, Episode] = {}
    while True:
        try:
            cmd, payload = conn.recv()
        except EOFError:
            break
        if cmd == "close":
            break
        try:
            conn.send(("ok", _handle(episodes, cmd, payload)))
        except Exception as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    _handle(episodes, "clear", None)


class EpisodePool:
    """``reset`` / ``decide`` / ``summary`` over slots spread on ``workers`` processes."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self.local: dict[int, Episode] = {}
        self.conns, self.procs = [], []
        ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def _call(self, cmd: str, by_slot: dict[int, Any] | list) -> dict[int, Any]:
        items = by_slot.items() if isinstance(by_slot, dict) else by_slot
        if self.workers == 0:
            payload = dict(items) if isinstance(by_slot, dict) else list(items)
            return _handle(self.local, cmd, payload)
        shares: list[list] = [[] for _ in range(self.workers)]
        for item in items:
            slot = item[0] if isinstance(item, tuple) else item
            shares[slot % self.workers].append(item)
        busy = []
        for w, share in enumerate(shares):
            if share:
                payload = dict(share) if isinstance(by_slot, dict) else share
                self.conns[w].send((cmd, payload))
                busy.append(w)
        out: dict[int, Any] = {}
        for w in busy:
            try:
                status, result = self.conns[w].recv()
            except EOFError as exc:
                raise RuntimeError(f"driving worker {w} died (exit code {self.procs[w].exitcode})") from exc
            if status != "ok":
                raise RuntimeError(f"driving worker {w}: {result}")
            out.update(result)
        return out

    def reset(self, starts: list[dict[str, Any]]) -> dict[int, Any]:
        """starts[i] = Episode kwargs (category, seed, duration, render) for slot i."""
        return self._call("reset", list(enumerate(starts)))

    def decide(self, anchors: dict[int, int]) -> dict[int, Any]:
        return self._call("decide", anchors)

    def summary(self, slots: list[int]) -> dict[int, Any]:
        return self._call("summary", slots)

    def frames(self, slots: list[int]) -> dict[int, Any]:
        return self._call("frames", slots)

    def expert(self, starts: list[dict[str, Any]]) -> dict[int, Any]:
        """Whole IDM/MOBIL episodes: {slot: (labelled samples, trace)}."""
        return self._call("expert", list(enumerate(starts)))

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self.conns, self.procs = [], []
        _handle(self.local, "clear", None)

    def __enter__(self) -> EpisodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
