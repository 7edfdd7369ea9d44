"""What every task shares: prompt templates, the Grade record and the reward built from it.

A task is a small object with four duties (see ``Task``): its examples (deterministic
splits), a prompt for an example, ``grade(example, completion) -> Grade``, and
``reward(example, completion) -> (float, components)``. Reward and evaluation both call
``grade``, so what is trained and what is reported cannot drift apart.

Reward (R1 §2.2.2, summed): accuracy_weight·correct + format_weight·format_ok
(+ language_weight·language consistency when language_weight > 0; reasoning without words earns
0 there, ``rewards.language.language_reward``). R1 weighs accuracy and
format equally; r1lab defaults format to 0.1 so that a well-formatted wrong answer is not
worth half a right one (TinyZero does the same). Set ``format_weight=1.0`` for R1's choice.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from typing import Any

from r1lab.rewards.format import parse_response

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {question} Assistant: <think>"
)
SHORT_TEMPLATE = "{question}\n<think>"
# what the corpus's worked solutions say before another attempt, in every task
RETRY = {"en": ["wait, let me try again.", "wait, let me check.", "wait, that is wrong."],
         "zh": ["等等，让我再试一次。", "等等，让我检查一下。", "等等，这不对。"]}
TEMPLATES = ("r1", "short", "chat", "plain")
CHAT_SYSTEM = (
    "Reason step by step inside <think> </think>, then give the final answer inside "
    "<answer> </answer>."
)


@dataclass
class Grade:
    """Result of grading one completion. ``extracted`` is the normalised answer used for voting."""

    correct: bool
    format_ok: bool
    extracted: str | None
    error: str | None = None  # grader problem (timeout, crash): counted, never silent


@dataclass
class TaskOptions:
    """Options common to every task (each task may add its own)."""

    template: str = field(default="r1", metadata={"help": "prompt template: r1 | short | chat | plain"})
    language: str = field(default="en", metadata={
        "help": "target language of the reasoning: en | zh | mix (each prompt English or Chinese, half each)"})
    accuracy_weight: float = 1.0
    format_weight: float = 0.1
    language_weight: float = 0.0


MIX = "mix"


def example_language(language: str, key: str) -> str:
    """The prompt language of one example: the task's ``language``, or with ``mix`` English or
    Chinese by a hash of the example's ``key`` (half each; the same on every run and machine).
    R1 saw language mixing when RL prompts came in more than one language (R1 §2.3.2)."""
    if language != MIX:
        return language
    return "zh" if zlib.crc32(key.encode()) % 2 else "en"


def with_languages(rows: list[dict], language: str) -> list[dict]:
    """``rows`` with each one's prompt language set (``example_language`` of its id) under ``mix``."""
    if language == MIX:
        for row in rows:
            row["language"] = example_language(MIX, str(row["id"]))
    return rows


def render_prompt(question: str, template: str, tokenizer: Any = None) -> str:
    """Turn a question into the text the model continues.

    ``r1``: R1-Zero's template, ending in ``<think>``. ``short``: ``question\\n<think>`` (tiny model).
    ``chat``: the tokenizer's chat template with a system line asking for the tags.
    ``plain``: the question as is.
    """
    if template == "r1":
        return R1_ZERO_TEMPLATE.format(question=question)
    if template == "short":
        return SHORT_TEMPLATE.format(question=question)
    if template == "plain":
        return question
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat_template")
        messages = [{"role": "system", "content": CHAT_SYSTEM}, {"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


class Task:
    """Base of the built-in tasks: subclasses set ``name`` and implement ``examples``,
    ``question`` and ``check`` (is the extracted answer right?) and ``extract``."""

    name = "task"
    default_template = "r1"
    languages: tuple[str, ...] = ()  # the prompt languages a task has ('' = any)
    needs_answer = True  # rows to grade carry a gold ``answer`` (code rows carry tests instead)

    def __init__(self, options: TaskOptions | None = None, **kwargs: Any):
        self.options = options or TaskOptions(template=self.default_template)
        for key, val in kwargs.items():
            if hasattr(self.options, key):
                setattr(self.options, key, val)
            else:
                raise TypeError(f"task {self.name!r} has no option {key!r}")
        if self.options.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.options.template!r}; choose one of {', '.join(TEMPLATES)}")
        if self.options.language == MIX:
            if not {"en", "zh"} <= set(self.languages):
                raise ValueError(f"language 'mix' needs a task written in en and zh; {self.name!r} is written in "
                                 f"{', '.join(self.languages) or 'its data language only'}")
        elif self.languages and self.options.language not in self.languages:
            raise ValueError(f"language {self.options.language!r} is not one this task is written in "
                             f"({', '.join(self.languages)})")

    # --- to implement ----------------------------------------------------------------
    def examples(self, split: str) -> list[dict]:
        raise NotImplementedError

    def question(self, example: dict) -> str:
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        """The final answer in a completion (normalised for majority voting), or None."""
        raise NotImplementedError

    def check(self, example: dict, answer: str) -> bool:
        """Is an extracted answer correct for this example?"""
        raise NotImplementedError

    def demonstration(self, example: dict, rng: Any) -> str | None:
        """A clean worked solution (the completion after the prompt) for cold-start SFT, or None
        when the task has no generator of its own solutions."""
        return None

    # --- shared ----------------------------------------------------------------------
    def tagged_answer(self, completion: str) -> str | None:
        """The last <answer>…</answer> content with spaces removed, or None."""
        ans = parse_response(completion, self.prompt_opens_think()).answer
        return ans.replace(" ", "") if ans else None

    def prompt(self, example: dict, tokenizer: Any = None) -> str:
        return render_prompt(self.question(example), self.options.template, tokenizer)

    def prompt_opens_think(self) -> bool:
        return self.options.template in ("r1", "short")

    def grade(self, example: dict, completion: str) -> Grade:
        """Grade one completion. Total: never raises; grader errors land in ``Grade.error``."""
        if not isinstance(completion, str):
            completion = "" if completion is None else str(completion)
        fmt = parse_response(completion, self.prompt_opens_think()).format_ok
        try:
            answer = self.extract(completion)
            correct = bool(answer is not None and self.check(example, answer))
            return Grade(correct=correct, format_ok=fmt, extracted=answer)
        except Exception as exc:  # a grader bug must not kill a run; it is reported
            return Grade(correct=False, format_ok=fmt, extracted=None, error=f"{type(exc).__name__}: {exc}")

    def grade_many(self, examples: list[dict], completions: list[str]) -> list[Grade]:
        """Grade (example, completion) pairs; tasks with a costly checker override it to batch."""
        if len(examples) != len(completions):
            raise ValueError(f"grade_many: {len(examples)} examples but {len(completions)} completions")
        return [self.grade(e, c) for e, c in zip(examples, completions)]

    def reward(self, example: dict, completion: str) -> tuple[float, dict[str, float]]:
        """Scalar reward and its components (accuracy, format, language)."""
        g = self.grade(example, completion)
        return self.assemble_reward(completion, g, float(g.correct), lang=self.language_of(example))

    def language_of(self, example: dict) -> str:
        """The language the example's prompt is written in (its reasoning should be too)."""
        return example.get("language") or example_language(self.options.language, str(example.get("id", "")))

    def assemble_reward(self, completion: str, g: Grade, credit: float, extra: dict[str, float] | None = None,
                        lang: str | None = None) -> tuple[float, dict[str, float]]:
        """accuracy_weight·credit + format_weight·format (+ language_weight·language consistency
        in ``lang``, the prompt's language); ``credit`` is 1/0 correctness, or a task's partial
        score (share of tests, rg's score); ``extra`` components are logged beside accuracy."""
        o = self.options
        comps = {"accuracy": float(g.correct), **(extra or {}), "format": float(g.format_ok)}
        total = o.accuracy_weight * credit + o.format_weight * comps["format"]
        if o.language_weight > 0:
            from r1lab.rewards.language import language_reward

            think = parse_response(completion, self.prompt_opens_think()).think
            comps["language"] = language_reward(think, lang or o.language)
            total += o.language_weight * comps["language"]
        if g.error:
            comps["grader_error"] = 1.0
        return float(total), comps

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, **dataclasses.asdict(self.options)}
