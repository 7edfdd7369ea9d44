"""A run's metric log: JSONL files in the run directory, always, plus the loggers of ``--report-to``.

    log = RunLog(run_dir, report_to="tensorboard,wandb", start_step=0, config=to_dict(cfg))
    log.write("metrics.jsonl", {"step": 3, "reward": 0.5}, prefix="train/")
    log.close()

- ``metrics.jsonl`` / ``eval.jsonl`` / ``samples.jsonl``: one JSON object a line. A resumed run
  first drops the rows of steps it will redo (``start_step`` and later), so every step appears
  once; a line torn by ``kill -9`` is dropped too.
- ``tensorboard``: event files in ``RUN_DIR/tb`` (``torch.utils.tensorboard``).
- ``wandb``: ``wandb.init`` with the run directory as its ``dir``. Its mode is ``WANDB_MODE`` when
  set, else ``online`` when an API key is configured and ``offline`` when none is (no network
  needed; ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later). The wandb run id is kept
  in ``RUN_DIR/wandb_id`` so that ``--resume`` continues the same wandb run.
- ``trackio``: ``trackio.init(project, name)``; trackio logs to a local database (no network).
- ``none``: the JSONL files only.

wandb and trackio are optional extras (``pip install 'r1lab[tracking]'``); asking for one that
is not installed is a one-line ``ConfigError`` before any work. Only finite numbers go to the
loggers (strings and NaN stay in the JSONL).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Any

from r1lab import distributed
from r1lab.config import ConfigError

LOGGERS = ("tensorboard", "wandb", "trackio", "none")
log = logging.getLogger("r1lab.tracking")


def parse_report_to(spec: str | list[str]) -> list[str]:
    """'tensorboard,wandb' or a list -> ['tensorboard', 'wandb']; 'none' -> []. Checks names and installs."""
    names = [x.strip() for x in (spec.split(",") if isinstance(spec, str) else spec) if x.strip()]
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        raise ConfigError(f"report_to: unknown logger {bad[0]!r}; choose from {', '.join(LOGGERS)}")
    names = [n for n in dict.fromkeys(names) if n != "none"]
    module = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
    for n in names:
        if importlib.util.find_spec(module[n]) is None:
            extra = "r1lab[tracking]" if n != "tensorboard" else "tensorboard"
            raise ConfigError(f"report_to {n!r}: the {n} package is not installed (pip install '{extra}')")
    return names


def truncate_from(path: Path, step: int) -> None:
    """Keep the rows of ``path`` whose step is below ``step`` (and drop torn lines)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", -1) < step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line torn by a kill
    path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")


def _wandb_mode(wandb: Any) -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    try:
        has_key = bool(os.environ.get("WANDB_API_KEY")) or bool(wandb.api.api_key)
    except Exception:  # noqa: BLE001 - any failure to find a key means: no key
        has_key = False
    return "online" if has_key else "offline"


class RunLog:
    """metrics.jsonl / eval.jsonl / samples.jsonl of one run directory, plus ``report_to`` loggers."""

    def __init__(self, run_dir: str | Path, report_to: str | list[str] = "tensorboard", start_step: int = 0,
                 config: dict[str, Any] | None = None, project: str = "r1lab"):
        self.dir = Path(run_dir)
        self.active = distributed.is_main()  # under torchrun only rank 0 writes
        self.loggers: list[str] = []
        self.tb = self.wandb = self.trackio = None
        if not self.active:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "eval.jsonl", "samples.jsonl", "rollouts.jsonl"):
            truncate_from(self.dir / name, start_step)  # a resumed run redoes these steps
        self.loggers = parse_report_to(report_to)
        name = self.dir.resolve().name
        if "tensorboard" in self.loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / "tb"))
        if "wandb" in self.loggers:
            import wandb

            id_file = self.dir / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.is_file() and start_step else secrets.token_hex(4)
            id_file.write_text(run_id)
            self.wandb = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(self.dir),
                                    config=config or {}, mode=_wandb_mode(wandb))
        if "trackio" in self.loggers:
            import trackio

            self.trackio = trackio
            trackio.init(project=project, name=name, config=config or {}, resume="allow")

    def write(self, name: str, row: dict[str, Any], prefix: str | None = "") -> None:
        """Append ``row`` to ``RUN_DIR/name``; with a ``prefix`` (None = file only), send its
        finite numbers to the loggers as ``prefix + key`` at ``row["step"]``. Ranks other than 0
        write nothing."""
        if not self.active:
            return
        with open(self.dir / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if prefix is None or not self.loggers:
            return
        scalars = {prefix + k: float(v) for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        step = int(row.get("step", 0))
        if self.tb is not None:
            for key, val in scalars.items():
                self.tb.add_scalar(key, val, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if self.trackio is not None:
            self.trackio.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.trackio is not None:
            self.trackio.finish()
