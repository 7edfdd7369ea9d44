"""Built-in tasks. ``get_task("countdown")``, ``get_task("gsm8k", data="path.jsonl")``.

| name       | examples from                          | answer checked by                 |
|------------|----------------------------------------|-----------------------------------|
| countdown  | seeded generator (solvable only)       | safe expression eval, numbers use |
| arithmetic | seeded generator, worked solutions     | integer equality                  |
| gsm8k      | local JSONL/JSON/parquet or hub id     | numeric equality                  |
| math       | local JSONL/JSON/parquet or hub id     | math-verify symbolic equivalence  |
| knights_knaves | generator (unique solution) or files | roles parsed from the answer      |
| code       | toy generator, HumanEval or MBPP rows  | hidden tests in the local sandbox |
| rg:NAME    | reasoning-gym create_dataset(NAME)     | its score_answer, in a worker     |
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from r1lab.config import ConfigError
from r1lab.data import DataError
from r1lab.tasks.base import Grade, Task, TaskOptions
from r1lab.tasks.mixture import Mixture, is_mixture, parse_spec

TASKS = {
    "countdown": "r1lab.tasks.countdown:Countdown",
    "arithmetic": "r1lab.tasks.arithmetic:Arithmetic",
    "gsm8k": "r1lab.tasks.gsm8k:GSM8K",
    "math": "r1lab.tasks.math:Math",
    "knights_knaves": "r1lab.tasks.knights_knaves:KnightsKnaves",
    "code": "r1lab.tasks.code:Code",
    "drive": "r1lab.driving.task:Drive",  # needs the driving extra (highway-env); lives in driving/
}


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name, or a mixture ``countdown:0.5,knights_knaves:0.5`` (``mixture.py``);
    keyword arguments are its options (template, data, fields, ...).

    An unknown name or a bad option is a ``ConfigError`` naming it (a bad data file a ``DataError``)."""
    try:
        if is_mixture(name):
            return _mixture(name, kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if name.startswith("rg:"):  # reasoning-gym dataset NAME (r1lab/tasks/rg.py)
        module, cls, kwargs = "r1lab.tasks.rg", "ReasoningGym", {**kwargs, "name": name[3:]}
    elif name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")
    else:
        module, cls = TASKS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)(**kwargs)
    except (DataError, ConfigError):
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task {name!r}: {exc}") from exc


def _mixture(spec: str, kwargs: dict[str, Any]) -> Mixture:
    """Members get the options they have (``data=...``), or an option addressed to one member
    (``gsm8k.data=...``); an option that no member has is an error."""
    weights = dict(parse_spec(spec))
    members, used = {}, set()
    for name in weights:
        probe = get_task(name)
        mine = {k: v for k, v in kwargs.items() if "." not in k and hasattr(probe.options, k)}
        own = {k.split(".", 1)[1]: v for k, v in kwargs.items() if k.startswith(name + ".")}
        bad = [k for k in own if not hasattr(probe.options, k)]
        if bad:
            raise ConfigError(f"task {name!r} has no option {bad[0]!r}")
        used.update(mine)
        used.update(name + "." + k for k in own)
        members[name] = get_task(name, **mine, **own) if (mine or own) else probe
    unused = sorted(set(kwargs) - used)
    if unused:
        raise ConfigError(f"task mixture {spec!r}: no member task has option {unused[0]!r}")
    return Mixture(members, weights)


def check_spec(spec: str) -> None:
    """A ConfigError unless every task named in ``spec`` (a name or a mixture) exists."""
    try:
        names = [n for n, _ in parse_spec(spec)] if is_mixture(spec) else [spec]
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for n in names:
        if n.startswith("rg:"):
            importlib.import_module("r1lab.tasks.rg").check_dataset(n[3:])
        elif n not in TASKS:
            raise ConfigError(f"unknown task {n!r}; built-in tasks: {', '.join(TASKS)}")


def task_kwargs(cfg: Any) -> dict[str, Any]:
    """The task options a command's config sets: ``data``, ``template``, ``language`` and
    ``sandbox_min_level`` when not empty, and each ``task_options`` entry ``KEY=VALUE`` (VALUE read as
    JSON when it parses: ``max_people=5``, ``extract_methods=["answer_tag"]``; else as a string)."""
    kw = {n: getattr(cfg, n) for n in ("data", "template", "language", "sandbox_min_level") if getattr(cfg, n, "")}
    for item in getattr(cfg, "task_options", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"task_options: expected KEY=VALUE, got {item!r}")
        try:
            kw[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kw[key.strip()] = value
    return kw


__all__ = ["Grade", "Mixture", "Task", "TaskOptions", "TASKS", "check_spec", "get_task", "task_kwargs"]
