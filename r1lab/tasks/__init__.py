"""Built-in tasks. ``get_task("countdown")``, ``get_task("gsm8k", data="path.jsonl")``.

| name       | examples from                          | answer checked by                 |
|------------|----------------------------------------|-----------------------------------|
| countdown  | seeded generator (solvable only)       | safe expression eval, numbers use |
| arithmetic | seeded generator, worked solutions     | integer equality                  |
| gsm8k      | local JSONL/JSON/parquet or hub id     | numeric equality                  |
| math       | local JSONL/JSON/parquet or hub id     | math-verify symbolic equivalence  |
| knights_knaves | generator (unique solution) or files | roles parsed from the answer      |
"""

from __future__ import annotations

import importlib
from typing import Any

from r1lab.config import ConfigError
from r1lab.data import DataError
from r1lab.tasks.base import Grade, Task, TaskOptions

TASKS = {
    "countdown": "r1lab.tasks.countdown:Countdown",
    "arithmetic": "r1lab.tasks.arithmetic:Arithmetic",
    "gsm8k": "r1lab.tasks.gsm8k:GSM8K",
    "math": "r1lab.tasks.math:Math",
    "knights_knaves": "r1lab.tasks.knights_knaves:KnightsKnaves",
}


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name; keyword arguments are its options (template, data, fields, ...).

    An unknown name or a bad option is a ``ConfigError`` naming it (a bad data file a ``DataError``)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)(**kwargs)
    except (DataError, ConfigError):
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task {name!r}: {exc}") from exc


def task_kwargs(cfg: Any) -> dict[str, Any]:
    """The task options a command's config sets: ``data``, ``template``, ``language`` when not empty."""
    return {name: getattr(cfg, name) for name in ("data", "template", "language") if getattr(cfg, name, "")}


__all__ = ["Grade", "Task", "TaskOptions", "TASKS", "get_task", "task_kwargs"]
