"""Reasoning Gym: ``get_task("rg:NAME")`` for reasoning-gym's ~100 procedural datasets.

    r1lab eval --task rg:knights_knaves
    r1lab zero --task rg:basic_arithmetic
    r1lab eval --task rg:countdown --task-options 'config={"min_numbers": 3, "max_numbers": 4}' test_size=50
    get_task("rg:graph_color", train_size=500, partial_credit=True)

Needs the optional extra (it installs offline from a local mirror too): ``pip install 'r1lab[rg]'``.

**Examples** come from ``create_dataset(NAME, size=N, seed=S, **config)``, whose item ``i`` is drawn
from ``Random(S + i)``: splits seeded ``seed`` and ``seed + 1`` would hold the same items shifted by
one. So train uses ``S = seed`` and test ``S = seed + TEST_SEED_OFFSET`` (10**9: disjoint item
seeds for any train_size below that); test questions that also occur in train, or earlier in
test, are dropped and replaced by the next items (``dropped_overlap`` counts them). Generation is
reasoning-gym's speed (countdown about 20 ms a problem here); the test split needs the train
questions, so it generates train too, once per task object. An example is plain JSON (r1lab
writes examples into eval.json): ``id``, ``question``, ``answer`` (the gold as a string; ``None``
where the scorer checks the response itself: propositional_logic, graph_color, boxnet,
rubiks_cube, rush_hour), ``metadata`` (JSON copy) and ``rg_source`` (dataset, seed, size, index).

**Grading**: the answer is the last ``<answer>…</answer>`` (stripped, inner spaces kept: rg answers
have them); none -> wrong. It goes to the dataset's own ``score_answer(answer, entry)``, where
``entry`` is the original entry (pickled, so tuples stay tuples: arc_agi and rearc compare them)
when ``rg_source`` names one, else the example's ``question``/``answer``/``metadata``. Correct means
score 1.0. Partial credit (knights_knaves 0.3 + 0.7·share of people right, countdown 0.05 for a
wrong expression, propositional_logic 0.25 for a tautology) is the ``partial`` reward component,
rewarded instead of the 0/1 accuracy only with ``partial_credit=True``.

**Where scorers run**: some scorers ``eval`` model text (countdown through sympy's ``parse_expr``),
so ``score_answer`` runs in a worker subprocess with rlimits, an audit hook and a hard per-item
deadline (``grader_timeout``), one round trip per batch; see ``rg_worker``. A score that timed
out, errored or was refused counts 0, the reason in ``Grade.error``; grading never raises or hangs.

**Scoring saved responses** (``r1lab score FILE --task rg:NAME``): a row is an example as
``examples()`` gives it plus ``responses``: ``question``, ``metadata``, ``answer`` (required only where
the dataset has a gold) and optionally ``rg_source``.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import itertools
import json
import pickle
from dataclasses import dataclass, field
from typing import Any

from r1lab.config import ConfigError
from r1lab.rewards.format import parse_response
from r1lab.tasks.base import Grade, Task, TaskOptions
from r1lab.tasks.rg_worker import Score, plain_json, worker_for

TEST_SEED_OFFSET = 10**9
MAX_ANSWER_CHARS = 10_000  # longer answers are graded wrong without being scored
INSTALL_HINT = "pip install 'r1lab[rg]'  (or: pip install reasoning-gym)"


@dataclass
class RGOptions(TaskOptions):
    name: str = field(default="", metadata={"help": "reasoning-gym dataset name"})
    config: dict[str, Any] | str = field(default_factory=dict, metadata={"help": "dataset config (JSON)"})
    train_size: int = field(default=2000, metadata={"help": "problems in the train split"})
    test_size: int = field(default=200, metadata={"help": "distinct test problems, none in train"})
    seed: int = field(default=1234, metadata={"help": "train split seed; test uses seed + 10**9"})
    partial_credit: bool = field(default=False, metadata={"help": "reward the dataset's partial score"})
    grader_timeout: float = field(default=3.0, metadata={"help": "wall seconds per scored answer"})
    grader_memory_mb: int = field(default=1024, metadata={"help": "address-space limit of the worker"})


@dataclass
class RGGrade(Grade):
    score: float = 0.0  # the dataset's raw score (0 when not scored)


def check_dataset(dataset: str):
    """reasoning-gym's factory, or a ConfigError: not installed, or no dataset of that name."""
    try:
        from reasoning_gym import factory
    except ImportError as exc:
        raise ConfigError(f"rg tasks need reasoning-gym ({exc}); {INSTALL_HINT}") from exc
    if dataset not in factory.DATASETS:
        names = sorted(factory.DATASETS)
        close = difflib.get_close_matches(dataset, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        some = [n for n in ("knights_knaves", "countdown", "basic_arithmetic", "graph_color") if n in names]
        raise ConfigError(f"unknown reasoning-gym dataset {dataset!r}; {hint}{len(names)} datasets, "
                          f"e.g. {', '.join(some or names[:4])}, ...")
    return factory


def _parse_config(config: dict[str, Any] | str, what: str) -> dict[str, Any]:
    try:
        config = (json.loads(config) if config.strip() else {}) if isinstance(config, str) else config
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what}: not a JSON object: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{what}: expected a JSON object, got {type(config).__name__}")
    if {"size", "seed"} & set(config):
        raise ConfigError(f"{what}: set size/seed with train_size, test_size and seed, not in the config")
    return config


class ReasoningGym(Task):
    name = "rg"
    default_template = "r1"
    languages = ("en",)

    def __init__(self, options: RGOptions | None = None, **kwargs: Any):
        super().__init__(options or RGOptions(), **kwargs)
        o = self.options
        self.name, o.config = f"rg:{o.name}", _parse_config(o.config, f"rg:{o.name} config")
        factory = check_dataset(o.name)
        if min(o.train_size, o.test_size) < 0 or not 0 <= o.seed < 2**31 or not float(o.grader_timeout) > 0:
            raise ConfigError("need train_size, test_size >= 0, seed in [0, 2**31), grader_timeout > 0")
        if int(o.grader_memory_mb) < 256:
            raise ConfigError("grader_memory_mb must be >= 256 (the worker imports reasoning-gym and sympy)")
        try:
            probe = factory.create_dataset(o.name, size=1, seed=o.seed, **o.config)[0]
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"{self.name}: bad dataset config {o.config}: {exc}") from exc
        self.needs_answer = probe.get("answer") is not None  # graph_color etc. have no gold to require
        self._splits: dict[str, list[dict]] = {}
        self._datasets: dict[tuple[int, int], Any] = {}
        self._pickled: dict[tuple[int, int, int], tuple[str, str]] = {}  # source -> (question, entry)
        self.dropped_overlap = 0

    def _entry(self, seed: int, size: int, index: int) -> dict:
        """Item ``index`` of the dataset (seed, size); its pickle is kept for the worker."""
        o = self.options
        if (seed, size) not in self._datasets:
            factory = check_dataset(o.name)
            self._datasets[(seed, size)] = factory.create_dataset(o.name, size=size, seed=seed, **o.config)
        entry = self._datasets[(seed, size)][index]
        pickled = base64.b64encode(pickle.dumps(entry)).decode()
        self._pickled[(seed, size, index)] = (str(entry["question"]), pickled)
        return entry

    def _rows(self, split: str, seed: int, size: int):
        """Examples of one dataset instance, generated lazily."""
        o = self.options
        for i in range(size):
            entry = self._entry(seed, size, i)
            gold = None if entry.get("answer") is None else str(entry["answer"])
            yield {"id": f"{split}-{i}", "question": str(entry["question"]), "answer": gold,
                   "metadata": plain_json(entry.get("metadata", {})),
                   "rg_source": {"dataset": o.name, "seed": seed, "size": size, "index": i}}

    def examples(self, split: str) -> list[dict]:
        """The split's examples (generated once per task; test needs the train questions)."""
        if split not in ("train", "test"):
            raise ValueError(f"{self.name} has splits 'train' and 'test', not {split!r}")
        o = self.options
        if "train" not in self._splits:
            self._splits["train"] = list(self._rows("train", o.seed, o.train_size))
        if split == "test" and "test" not in self._splits:
            seen = {row["question"] for row in self._splits["train"]}
            rows = self._rows("test", o.seed + TEST_SEED_OFFSET, 2 * o.test_size + 16)
            fresh = (r for r in rows if r["question"] not in seen and not seen.add(r["question"]))
            test = self._splits["test"] = list(itertools.islice(fresh, o.test_size))
            self.dropped_overlap = test[-1]["rg_source"]["index"] + 1 - len(test) if test else 0
        return [dict(row) for row in self._splits[split]]

    def question(self, example: dict) -> str:
        return str(example["question"])

    def extract(self, completion: str) -> str | None:
        """The last <answer>…</answer>, stripped (inner spaces kept), or None."""
        return parse_response(completion, self.prompt_opens_think()).answer or None

    def check(self, example: dict, answer: str) -> bool:
        score, err = self.scores([(answer, example)])[0]
        return err is None and score >= 1.0 - 1e-9

    def scores(self, pairs: list[tuple[str, dict]]) -> list[Score]:
        """[(score, error)] for (answer, example) pairs, in one worker round trip."""
        o = self.options
        out: list[Score] = [(0.0, None)] * len(pairs)
        items, where = [], []
        for k, (answer, example) in enumerate(pairs):
            item, problem = self._item(example)
            if problem:
                out[k] = (0.0, problem)
            else:
                items.append({"answer": answer, **item})
                where.append(k)
        if items:
            worker = worker_for(o.name, o.config, int(o.grader_memory_mb))
            for k, res in zip(where, worker.run(items, float(o.grader_timeout))):
                out[k] = res
        return out

    def _item(self, example: Any) -> tuple[dict, str | None]:
        """What the worker scores against: the original entry (pickled, so tuples stay tuples) when
        ``rg_source`` names an item of this dataset with this question, else the example's JSON."""
        src = example.get("rg_source") if isinstance(example, dict) else None
        if src is not None:
            key = tuple(src.get(k) for k in ("seed", "size", "index")) if isinstance(src, dict) else ("?",)
            if not all(isinstance(k, int) for k in key) or src.get("dataset") != self.options.name:
                return {}, f"rg_source {src!r} is not an item of dataset {self.options.name!r}"
            if key not in self._pickled:
                with contextlib.suppress(Exception):  # a row's source we cannot regenerate: use its JSON
                    self._entry(*key)
            question, pickled = self._pickled.get(key, (None, ""))
            if question is not None and question == example.get("question"):
                return {"pickled": pickled}, None
        if not isinstance(example, dict) or not isinstance(example.get("metadata"), dict):
            return {}, "example has no 'metadata' object (rg tasks need question, answer, metadata)"
        return {"entry": plain_json({k: example.get(k) for k in ("question", "answer", "metadata")})}, None

    def grade(self, example: dict, completion: str) -> RGGrade:
        return self.grade_many([example], [completion])[0]

    def grade_many(self, examples: list[dict], completions: list[str]) -> list[RGGrade]:
        """Grade a batch with one worker round trip; timeouts and errors land in ``Grade.error``."""
        if len(examples) != len(completions):
            raise ValueError(f"grade_many: {len(examples)} examples but {len(completions)} completions")
        opens = self.prompt_opens_think()
        grades: list[RGGrade] = []
        pairs, where = [], []
        for example, completion in zip(examples, completions):
            text = "" if completion is None else str(completion)
            parsed = parse_response(text, opens)
            answer = parsed.answer or None
            grades.append(RGGrade(correct=False, format_ok=parsed.format_ok, extracted=answer))
            if answer is not None and len(answer) <= MAX_ANSWER_CHARS:
                pairs.append((answer, example))
                where.append(len(grades) - 1)
        try:
            results = self.scores(pairs)
        except Exception as exc:  # a grader bug must not kill a run; it is reported
            results = [(0.0, f"{type(exc).__name__}: {exc}")] * len(pairs)
        for i, (score, err) in zip(where, results):
            grades[i].score, grades[i].error = score, err
            grades[i].correct = err is None and score >= 1.0 - 1e-9
        return grades

    def reward(self, example: dict, completion: str) -> tuple[float, dict[str, float]]:
        """accuracy_weight·(score == 1; the score itself with partial_credit) + format (+ language)."""
        g = self.grade(example, completion)
        partial = min(1.0, max(0.0, g.score))
        credit = partial if self.options.partial_credit else float(g.correct)
        return self.assemble_reward(completion, g, credit, {"partial": partial})
