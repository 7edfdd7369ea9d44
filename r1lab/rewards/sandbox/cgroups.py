"""Per-run cgroups for the sandbox: memory and pids limits, OOM detection, kill, removal.

``probe() -> (Cgroups | None, reason)`` finds where this process may create child cgroups: under
its own memory and pids cgroups (v1, one hierarchy per controller, found through
/proc/self/cgroup and /proc/self/mountinfo) or under its own v2 cgroup when both controllers are
delegated there. It creates and removes a test group, so "available" means writable, not just
mounted. ``Cgroups.create(limits)`` makes one ``r1lab-sbx-<random>`` group per controller for a
run; the child writes itself into ``procs`` (as root, before it drops its uid); ``oom_killed``
and ``destroy`` (kill what is left, then rmdir) run in the parent afterwards.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from dataclasses import dataclass, field

PREFIX = "r1lab-sbx-"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, root inside the hierarchy, fstype, super options) of each cgroup mount."""
    out = []
    for line in _read("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if len(rparts) >= 3 and rparts[0] in ("cgroup", "cgroup2"):
            out.append((parts[4], parts[3], rparts[0], rparts[2]))
    return out


def parents() -> tuple[int, dict[str, str]]:
    """(cgroup version, {controller: directory to create run groups in}); {} when not found."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            own[c] = path
    mounts = _mounts()
    found = {}
    for ctrl in ("memory", "pids"):
        for point, root, fstype, opts in mounts:
            if fstype == "cgroup" and ctrl in opts.split(",") and ctrl in own:
                rel = own[ctrl][len(root):] if root != "/" and own[ctrl].startswith(root) else own[ctrl]
                found[ctrl] = os.path.join(point, rel.lstrip("/"))
    if len(found) == 2:
        return 1, found
    for point, root, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            rel = own[""][len(root):] if root != "/" and own[""].startswith(root) else own[""]
            base = os.path.join(point, rel.lstrip("/"))
            return 2, {"memory": base, "pids": base}
    return 0, {}


@dataclass
class RunGroup:
    """The cgroup directories of one run."""

    version: int
    dirs: list[str] = field(default_factory=list)
    memory_dir: str = ""

    @property
    def procs(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def oom_killed(self) -> bool:
        """Did the kernel's OOM killer act in this run's memory group?"""
        if not self.memory_dir:
            return False
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in _read(os.path.join(self.memory_dir, name)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
            return self.version == 1 and int(_read(os.path.join(self.memory_dir, "memory.failcnt"))) > 0
        except (OSError, ValueError):
            return False

    def destroy(self, patience: float = 5.0) -> None:
        """Kill every process still inside, then remove the groups (retrying while they empty)."""
        deadline = time.monotonic() + patience
        for d in self.dirs:
            if self.version == 2 and os.path.exists(os.path.join(d, "cgroup.kill")):
                try:
                    _write(os.path.join(d, "cgroup.kill"), "1")
                except OSError:
                    pass
            while os.path.isdir(d):
                try:
                    pids = [int(x) for x in _read(os.path.join(d, "cgroup.procs")).split()]
                except OSError:
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.002)


@dataclass(frozen=True)
class Cgroups:
    version: int
    parents: dict[str, str]

    def create(self, memory_bytes: int, pids: int) -> RunGroup:
        name = PREFIX + secrets.token_hex(6)
        group = RunGroup(self.version)
        try:
            if self.version == 1:
                mem = os.path.join(self.parents["memory"], name)
                os.mkdir(mem)
                group.dirs.append(mem)
                group.memory_dir = mem
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory_bytes))
                if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                pid_dir = os.path.join(self.parents["pids"], name)
                os.mkdir(pid_dir)
                group.dirs.append(pid_dir)
                _write(os.path.join(pid_dir, "pids.max"), str(pids))
            else:
                d = os.path.join(self.parents["memory"], name)
                os.mkdir(d)
                group.dirs.append(d)
                group.memory_dir = d
                _write(os.path.join(d, "memory.max"), str(memory_bytes))
                if os.path.exists(os.path.join(d, "memory.swap.max")):
                    _write(os.path.join(d, "memory.swap.max"), "0")
                _write(os.path.join(d, "pids.max"), str(pids))
        except OSError:
            group.destroy(patience=0.5)
            raise
        return group


def probe() -> tuple[Cgroups | None, str]:
    """Where per-run cgroups can be made, or why not (the reason names the failing step)."""
    try:
        version, found = parents()
    except OSError as exc:
        return None, f"cannot read /proc/self/cgroup or mountinfo: {exc}"
    if not found:
        return None, "no memory+pids cgroup hierarchy is mounted for this process"
    if version == 2:
        try:
            controllers = _read(os.path.join(found["memory"], "cgroup.subtree_control")).split()
        except OSError as exc:
            return None, f"cgroup v2: {exc}"
        if not {"memory", "pids"} <= set(controllers):
            return None, f"cgroup v2: memory and pids are not delegated below {found['memory']}"
    cg = Cgroups(version, found)
    try:
        cg.create(64 << 20, 8).destroy()
    except OSError as exc:
        return None, f"cgroup v{version} not writable here: {exc}"
    return cg, f"v{version}: " + ", ".join(f"{k} under {v}" for k, v in sorted(found.items()))
