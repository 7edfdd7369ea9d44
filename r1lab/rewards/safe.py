"""Run reward functions so that one that raises or hangs cannot kill or stall training.

``RewardRunner(task, reward_fn=None, timeout=5.0)`` scores completions on a thread pool.
A call that raises gets reward 0 and is counted and logged with its message; a call still
running after ``timeout`` seconds gets reward 0 and is counted as a timeout, and the pool is
replaced so the stuck thread cannot block the next step (Python cannot kill a thread; graders
that can truly hang, like math-verify, run in worker processes of their own — see
``rewards.math_equiv``). Nothing is silent: the counts go into the step's metrics.

``reward_fn`` is "package.module:function" taking ``(example: dict, completion: str)`` and
returning a float or ``(float, {component: value})``; by default the task's own reward.

``overlong_penalty`` is DAPO's soft overlong punishment (eq. 13).
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import logging
import math
from collections.abc import Callable
from typing import Any

from r1lab.config import ConfigError

log = logging.getLogger("r1lab.rewards")


def load_reward_fn(spec: str) -> Callable[[dict, str], Any]:
    """'pkg.module:function' -> the function (a clear error if it is not there)."""
    if ":" not in spec:
        raise ConfigError(f"reward function must be given as 'module:function', got {spec!r}")
    module, name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load reward function {spec!r}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"reward function {spec!r} is not callable")
    return fn


class RewardRunner:
    def __init__(self, task, reward_fn: str | Callable | None = None, timeout: float = 5.0, workers: int = 4):
        self.task = task
        self.fn = load_reward_fn(reward_fn) if isinstance(reward_fn, str) and reward_fn else reward_fn
        self.timeout = timeout
        self.workers = workers
        self.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward")
        self.total_errors = 0
        self.total_timeouts = 0

    def _one(self, example: dict, completion: str) -> tuple[float, dict[str, float]]:
        if self.fn is None:
            return self.task.reward(example, completion)
        out = self.fn(example, completion)
        if isinstance(out, tuple):
            value, comps = out
        else:
            value, comps = out, {}
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"reward is {value}")
        return value, dict(comps)

    def __call__(self, examples: list[dict], completions: list[str]) -> tuple[list[float], list[dict], dict]:
        """Rewards and components for each (example, completion) pair, plus error counts."""
        futures = [self.pool.submit(self._one, ex, c) for ex, c in zip(examples, completions)]
        rewards, comps = [], []
        errors = timeouts = 0
        stuck = False
        for fut in futures:
            try:
                value, comp = fut.result(timeout=self.timeout)
            except cf.TimeoutError:
                timeouts += 1
                stuck = True
                value, comp = 0.0, {"reward_timeout": 1.0}
            except Exception as exc:  # the reward function's own bug: count it, log it, go on
                errors += 1
                if errors <= 3:
                    log.warning("reward function raised %s: %s (sample reward set to 0)", type(exc).__name__, exc)
                value, comp = 0.0, {"reward_error": 1.0}
            rewards.append(value)
            comps.append(comp)
        if stuck:
            log.warning("%d reward call(s) exceeded %.1fs (sample rewards set to 0)", timeouts, self.timeout)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="reward")
        self.total_errors += errors
        self.total_timeouts += timeouts
        return rewards, comps, {"reward_errors": errors, "reward_timeouts": timeouts}


def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO soft overlong punishment: 0 up to max_len − buffer, then linear down to −1 at
    max_len, −1 beyond. ``buffer`` = 0 disables it."""
    if buffer <= 0 or length <= max_len - buffer:
        return 0.0
    if length <= max_len:
        return (max_len - buffer - length) / buffer
    return -1.0
