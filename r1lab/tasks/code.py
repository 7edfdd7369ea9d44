"""Code: write a function, graded by running hidden tests in r1lab's local sandbox.

    get_task("code")                                      # the toy family (tasks/toycode.py)
    get_task("code", data="../shared/data/humaneval/test.jsonl")   # HumanEval rows
    get_task("code", data="mbpp.jsonl")                   # MBPP rows
    r1lab score samples.jsonl --task code --data humaneval.jsonl   # prints the sandbox level

Rows come in two forms, told apart by their fields:

- HumanEval: ``prompt`` (signature + docstring), ``test`` (``def check(candidate): ...``),
  ``entry_point``, optional ``canonical_solution``. The program run is ``prompt + "\\n" + code``,
  so a completion may be the function's body (as HumanEval's own harness expects) or a whole
  ``def`` (which then replaces the stub).
- MBPP: ``prompt`` or ``text`` (the description), ``test_list`` (assert statements), optional
  ``test_imports``, ``test_setup_code``, ``challenge_test_list`` (more asserts, graded too) and
  ``code`` (the reference). The program is ``test_imports + code + test_setup_code``.

Extraction: the last fenced Python block, else the answer tags' content, else the whole
completion (leading indentation kept, so a bare body still runs). Grading runs in
``rewards.sandbox`` (fresh isolated process per program, verdict from the parent, see there);
reward = accuracy_weight · share of tests passed (+ format), accuracy = all tests passed.
``sandbox_min_level`` refuses to grade on a machine that cannot isolate at that level.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from r1lab.config import ConfigError
from r1lab.data import read_rows
from r1lab.rewards.format import parse_response
from r1lab.tasks.base import MIX, Grade, Task, TaskOptions, with_languages
from r1lab.tasks.toycode import toy_problems

log = logging.getLogger("r1lab.tasks.code")
FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
QUESTION_EN = "Complete this Python function:\n{prompt}"


@dataclass
class CodeOptions(TaskOptions):
    template: str = "short"
    data: str = field(default="", metadata={"help": "HumanEval/MBPP rows: file or hub id ('' = the toy family)"})
    split: str = field(default="test", metadata={"help": "split read from data when examples() gets none"})
    seed: int = field(default=0, metadata={"help": "toy family: order and hidden-test inputs"})
    timeout: float = field(default=10.0, metadata={"help": "seconds per program (wall clock)"})
    sandbox_min_level: str = field(default="process", metadata={
        "help": "refuse to grade below this containment level: process | seccomp | namespaces | full"})
    workers: int = field(default=2, metadata={"help": "programs graded at once"})


def extract_code(completion: str, prompt_opens_think: bool = True) -> str | None:
    """The last fenced Python block, else the answer tags' content, else the whole completion."""
    text = completion or ""
    blocks = FENCE.findall(text)
    if blocks:
        return blocks[-1].rstrip() or None
    ans = parse_response(text, prompt_opens_think).answer
    if ans and ans.strip():
        return ans.strip("\n").rstrip()
    text = text.split("</think>", 1)[1] if "</think>" in text else text
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip() or None


def program_of(example: dict, code: str) -> tuple[str, Any, str | None]:
    """(program, tests, entry_point) for the sandbox, by row form."""
    if "test_list" in example:
        imports = "\n".join(example.get("test_imports") or [])
        setup = example.get("test_setup_code") or ""  # original MBPP: run after the code, before the tests
        program = (imports + "\n" + code if imports else code) + ("\n" + setup if setup.strip() else "")
        return program, list(example["test_list"]) + list(example.get("challenge_test_list") or []), None
    return example["prompt"] + "\n" + code, example["test"], example["entry_point"]


class Code(Task):
    name = "code"
    default_template = "short"
    needs_answer = False
    languages = ("en", "zh")  # the toy problems' specs (file rows are graded in their own language)

    def __init__(self, options: CodeOptions | None = None, **kwargs: Any):
        super().__init__(options or CodeOptions(), **kwargs)
        from r1lab.rewards.sandbox import LEVELS

        if self.options.sandbox_min_level not in LEVELS:
            raise ValueError(f"sandbox_min_level must be one of {' | '.join(LEVELS)}, "
                             f"not {self.options.sandbox_min_level!r}")
        self._sandbox = None
        self._lock = threading.Lock()

    @property
    def sandbox(self):
        """The sandbox, probed on first use (its level is logged, and refused below the minimum)."""
        with self._lock:
            if self._sandbox is None:
                from r1lab.rewards.sandbox import Sandbox, SandboxUnavailable

                try:
                    self._sandbox = Sandbox(min_level=self.options.sandbox_min_level)
                except SandboxUnavailable as exc:
                    raise ConfigError(f"task 'code': {exc}") from exc
                log.info("code task: sandbox level %s", self._sandbox.level)
            return self._sandbox

    def examples(self, split: str | None = None) -> list[dict]:
        o = self.options
        if not o.data:
            if o.language != MIX:
                return toy_problems(split or "test", o.seed, o.language)
            zh = {r["id"]: r for r in toy_problems(split or "test", o.seed, "zh")}  # the same problems
            rows = with_languages(toy_problems(split or "test", o.seed, "en"), MIX)
            return [{**zh[r["id"]], "language": "zh"} if r["language"] == "zh" else r for r in rows]
        rows, _ = read_rows(o.data, split or o.split, validate=_check_row)
        return [{"id": str(r.get("task_id", r.get("id", f"code-{i}"))), **r} for i, r in enumerate(rows)]

    def question(self, example: dict) -> str:
        if "spec" in example:
            return str(example["spec"])
        if "test_list" in example:
            text = example.get("prompt") or example.get("text")
            return f"{text}\nYour code should pass: {example['test_list'][0]}"
        return QUESTION_EN.format(prompt=example["prompt"])

    def extract(self, completion: str) -> str | None:
        return extract_code(completion, self.prompt_opens_think())

    def demonstration(self, example: dict, rng: Any) -> str | None:
        """Attempts checked on the spec's example until one is right, then the code (toy rows only;
        None when six attempts miss)."""
        if "family" not in example:
            return None
        from r1lab.tasks.toycode import CodeStyle, code_answer, worked_solution

        text = worked_solution(example, rng, self.language_of(example),
                               CodeStyle(first_correct=0.35, retry=1.0, max_attempts=6))
        return text if text.endswith(code_answer(example)) else None

    def check(self, example: dict, answer: str) -> bool:
        return self.grade(example, answer).correct

    def grade(self, example: dict, completion: str) -> Grade:
        return self.grade_many([example], [completion])[0]

    def grade_many(self, examples: list[dict], completions: list[str]) -> list[Grade]:
        return [g for g, _ in self._run(examples, completions)]

    def _run(self, examples: list[dict], completions: list[str]) -> list[tuple[Grade, float]]:
        """(grade, share of tests passed) per pair; programs run ``workers`` at a time."""
        if len(examples) != len(completions):
            raise ValueError(f"grade_many: {len(examples)} examples but {len(completions)} completions")
        out: list[tuple[Grade, float] | None] = [None] * len(examples)
        items, where = [], []
        for i, (ex, c) in enumerate(zip(examples, completions)):
            text = c if isinstance(c, str) else ""
            fmt = parse_response(text, self.prompt_opens_think()).format_ok
            code = self.extract(text)
            if code is None:
                out[i] = (Grade(False, fmt, None), 0.0)
                continue
            items.append(program_of(ex, code) + (self.options.timeout,))
            where.append((i, fmt, code))
        with ThreadPoolExecutor(max_workers=max(1, self.options.workers), thread_name_prefix="code") as pool:
            verdicts = list(pool.map(self._verdict, items))
        for (i, fmt, code), (v, err) in zip(where, verdicts):
            share = v.passed / v.total if v is not None and v.status == "ok" and v.total else 0.0
            out[i] = (Grade(v is not None and v.all_passed, fmt, code[:2000], error=err), share)
        return out  # type: ignore[return-value]

    def _verdict(self, item: tuple) -> tuple[Any, str | None]:
        """One program's verdict, or (None, why) when its tests cannot be run (a grader error)."""
        program, tests, entry, timeout = item
        try:
            return self.sandbox.run(program, tests, timeout=timeout, entry_point=entry), None
        except ValueError as exc:  # the row's tests do not parse: the data's fault, reported
            return None, f"tests not runnable: {exc}"[:200]

    def reward(self, example: dict, completion: str) -> tuple[float, dict[str, float]]:
        """accuracy_weight · share of tests passed + format (+ language); ``accuracy`` = all passed."""
        (g, share), = self._run([example], [completion])
        return self.assemble_reward(completion, g, share, {"tests_passed": share}, lang=self.language_of(example))


def _check_row(row: dict) -> str | None:
    if "test_list" in row:
        if not isinstance(row["test_list"], list) or not all(isinstance(t, str) for t in row["test_list"]):
            return "field 'test_list': expected a list of assert statements"
        if not isinstance(row.get("prompt") or row.get("text"), str):
            return "field 'prompt' or 'text': expected the problem description"
        return None
    for name in ("prompt", "test", "entry_point"):
        if not isinstance(row.get(name), str) or not row[name]:
            return f"field {name!r}: expected a string (HumanEval form: prompt, test, entry_point; or MBPP: test_list)"
    return None
