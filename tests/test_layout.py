"""The package's architecture, checked: no import cycles, commands never import each other, small
files, and the example that runs a GRPO step from components alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "r1lab"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> set[str]:
    return {module_name(p) for p in PKG.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every r1lab module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("r1lab"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("r1lab"):
                continue
            for alias in node.names:  # `from r1lab.train import checkpoint` imports the module checkpoint,
                sub = f"{base}.{alias.name}"  # `from r1lab.rl.grpo import gae` the module grpo
                out.add(sub if sub in MODULES else base)
    return out


MODULES = _modules()


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    g = {}
    for name, path in files.items():
        deps = set()
        for imp in imports_of(path):
            while imp and imp not in files:  # `r1lab.x.func` -> module `r1lab.x`
                imp = imp.rpartition(".")[0]
            if imp and imp != name and imp != "r1lab":
                deps.add(imp)
        g[name] = deps
    return g


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_r1lab():
    g = graph()
    assert "r1lab.rl.step" in g and "r1lab.rl.update" in g["r1lab.rl.step"]  # the graph is real
    assert find_cycle(g) is None, " -> ".join(find_cycle(g))


def test_no_import_cycle_between_subpackages():
    g = graph()
    top = {}
    for mod, deps in g.items():
        a = ".".join(mod.split(".")[:2])
        top.setdefault(a, set()).update(".".join(d.split(".")[:2]) for d in deps if ".".join(d.split(".")[:2]) != a)
    assert find_cycle(top) is None, " -> ".join(find_cycle(top))


def test_commands_never_import_each_other():
    for path in (PKG / "commands").glob("*.py"):
        bad = [m for m in imports_of(path) if m.startswith("r1lab.commands")]
        assert not bad, f"{path.name} imports {bad}"


def test_components_never_import_commands():
    for path in PKG.rglob("*.py"):
        if "commands" in path.parts or path.name == "cli.py":
            continue
        bad = [m for m in imports_of(path) if m.startswith("r1lab.commands")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_files_stay_small():
    for path in list(PKG.rglob("*.py")) + list((ROOT / "examples").glob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        assert n <= 520, f"{path.relative_to(ROOT)} has {n} lines"


def test_example_runs_a_grpo_step_without_commands():
    script = ROOT / "examples" / "grpo_step.py"
    assert not [m for m in imports_of(script) if m.startswith("r1lab.commands")]
    code = ("import runpy, sys; sys.argv = ['grpo_step.py', '--prompts', '2', '--group', '4', '--max-new-tokens', '24'];"
            f"runpy.run_path({str(script)!r}, run_name='__main__');"
            "assert not [m for m in sys.modules if m.startswith('r1lab.commands')], 'commands imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    row = json.loads(out.stdout.splitlines()[0])
    assert row["step"] == 0 and 0.0 <= row["accuracy"] <= 1.0 and row["response_length"] > 0
    assert row["grad_norm"] is None or row["grad_norm"] >= 0
