"""Run logs: JSONL always, plus tensorboard / wandb / trackio (offline, no network) or none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1lab.config import ConfigError
from r1lab.train.tracking import RunLog, parse_report_to, truncate_from

ROOT = Path(__file__).resolve().parents[1]


def test_parse_report_to():
    assert parse_report_to("none") == []
    assert parse_report_to("tensorboard, none") == ["tensorboard"]
    assert parse_report_to(["tensorboard", "tensorboard"]) == ["tensorboard"]
    with pytest.raises(ConfigError, match="unknown logger 'mlflow'"):
        parse_report_to("tensorboard,mlflow")


def test_jsonl_only_and_resume_truncation(tmp_path):
    log = RunLog(tmp_path, "none")
    for step in range(4):
        log.write("metrics.jsonl", {"step": step, "reward": step / 4, "note": "x"}, prefix="train/")
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "rew')  # torn by a kill
    RunLog(tmp_path, "none", start_step=2).close()  # a resume at step 2 redoes steps 2, 3
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]
    assert not (tmp_path / "tb").exists()
    truncate_from(tmp_path / "absent.jsonl", 0)  # no file: nothing to do


def test_tensorboard_events(tmp_path):
    log = RunLog(tmp_path, "tensorboard")
    log.write("metrics.jsonl", {"step": 0, "reward": 0.5, "nan": float("nan")}, prefix="train/")
    log.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["train/reward"]  # NaN stays in the JSONL only
    assert acc.Scalars("train/reward")[0].value == 0.5


SCRIPT = textwrap.dedent("""
    import sys
    from r1lab.train.tracking import RunLog
    log = RunLog(sys.argv[1], sys.argv[2], config={"lr": 1e-4}, project="r1lab-test")
    for step in range(3):
        log.write("metrics.jsonl", {"step": step, "reward": 0.1 * step}, prefix="train/")
    log.close()
    print("ok")
""")


def _offline_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TRACKIO_"))}
    env.update(HOME=str(tmp_path / "home"), TRACKIO_DIR=str(tmp_path / "trackio"), WANDB_SILENT="true")
    return env


@pytest.mark.parametrize("logger", ["wandb", "trackio"])
def test_optional_loggers_work_offline(logger, tmp_path):
    pytest.importorskip(logger, reason=f"{logger} is an optional extra (pip install 'r1lab[tracking]')")
    run_dir = tmp_path / "run"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(run_dir), logger], capture_output=True, text=True,
                         timeout=180, cwd=ROOT, env=_offline_env(tmp_path))
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    if logger == "wandb":
        runs = list((run_dir / "wandb").glob("offline-run-*"))
        assert runs, list((run_dir / "wandb").iterdir())  # offline: no key, no network needed
        assert (run_dir / "wandb_id").read_text().strip() in runs[0].name
    else:
        assert list((tmp_path / "trackio").rglob("*.db")), list((tmp_path / "trackio").rglob("*"))
