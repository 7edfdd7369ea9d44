"""Stage folders of a multi-stage command (``r1lab drive``, ``r1lab drive-lm``): a stage is done
when its ``done.json`` exists, written last and atomically (temp file + rename), so a kill -9 at
any moment leaves the stage either finished, with its result, or to be redone/resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def done(stage: Path) -> dict[str, Any] | None:
    """The finished stage's result, or None while it is not finished."""
    path = Path(stage) / "done.json"
    return json.loads(path.read_text()) if path.is_file() else None


def finish(stage: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Mark ``stage`` finished with ``info`` (returned)."""
    tmp = Path(stage) / "done.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.rename(Path(stage) / "done.json")
    return info
