"""Knights and Knaves: logic puzzles with exactly one consistent answer, generated or from files.

    get_task("knights_knaves")                                # generator, 3 people, depth ≤ 2
    get_task("knights_knaves", min_people=2, max_people=8, max_depth=3, language="zh")
    get_task("knights_knaves", data="kk.jsonl")               # rows with quiz, names, solution

On the island knights always tell the truth and knaves always lie; each inhabitant makes one
statement about the others (or themselves), and the question is who is which. Statements are
built from atoms "X is a knight / a knave" with not, and, or, iff and implies, nested up to
``max_depth``; a puzzle is kept only when exactly one assignment of the 2^n is consistent
(every knight's statement true, every knave's false), checked by brute force. The curriculum
is the number of people (``min_people``..``max_people``) and the statement depth.

The grader reads Logic-RL's answer form inside the answer tags, ``(1) Zoey is a knight\\n(2)
Oliver is a knave``, or a plain sentence (``Zoey is a knight and Oliver is a knave``), in
English or Chinese (``Zoey是骑士``). Correct = every person named with the right role and
none named twice with different roles. Rows from a file need ``quiz`` (the question),
``names`` and ``solution`` (a list of booleans, true = knight), the fields of the published
K&K sets (Logic-RL, "K-and-K"), so those grade with the same ``grade()``.

Train/test: instances are partitioned by a hash of their content (like Countdown), so the
held-out puzzles are never trained on, whatever the seed.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Any

from r1lab.data import DataError, read_rows
from r1lab.tasks.base import RETRY, Task, TaskOptions, example_language

NAMES = {
    "en": ["Zoey", "Oliver", "Ava", "Liam", "Mia", "Noah", "Emma", "Jack", "Lily", "Owen", "Ruby", "Leo"],
    "zh": ["小明", "小红", "小刚", "小丽", "小华", "小芳", "小军", "小梅", "小强", "小燕", "小亮", "小雪"],
}
ROLE = {"en": ("knight", "knave"), "zh": ("骑士", "无赖")}
OPS = ("and", "or", "iff", "implies")
PHRASES = {
    "en": {
        "intro": "Knights always tell the truth and knaves always lie. {n} people: {names}.",
        "says": "{x} says: {s}.",
        "ask": "Who is a knight and who is a knave?",
        "is": "{x} is a {role}", "is_not": "{x} is not a {role}", "not": "it is false that {s}",
        "and": "{a} and {b}", "or": "{a} or {b}", "iff": "{a} if and only if {b}", "implies": "if {a} then {b}",
        "list_sep": ", ",
    },
    "zh": {
        "intro": "骑士总说真话，无赖总说假话。共{n}人：{names}。",
        "says": "{x}说：{s}。",
        "ask": "谁是骑士，谁是无赖？",
        "is": "{x}是{role}", "is_not": "{x}不是{role}", "not": "并非{s}",
        "and": "{a}并且{b}", "or": "{a}或者{b}", "iff": "{a}当且仅当{b}", "implies": "如果{a}那么{b}",
        "list_sep": "、",
    },
}


def pick_names(rng: random.Random, n: int, lang: str) -> list[str]:
    """``n`` distinct names, listed in ``NAMES`` order. The order is what lets the tiny base learn
    to copy names at all: with names in any order, every name is as likely at every place, so the
    shared (tied) embedding pulls the twelve together (cosine 0.97 in base v4) and the model never
    tells them apart; with a fixed order, which names can follow which differs by name
    (docs/base-model.md, v5)."""
    return sorted(rng.sample(NAMES[lang], n), key=NAMES[lang].index)


# a statement: ("is", person, knight?) | ("not", s) | (op, s, t) with op in OPS
Statement = tuple


def truth(s: Statement, assign: tuple[bool, ...]) -> bool:
    """The truth value of a statement under an assignment (True = knight)."""
    kind = s[0]
    if kind == "is":
        return assign[s[1]] == s[2]
    if kind == "not":
        return not truth(s[1], assign)
    a, b = truth(s[1], assign), truth(s[2], assign)
    return {"and": a and b, "or": a or b, "iff": a == b, "implies": (not a) or b}[kind]


def consistent(statements: list[Statement], assign: tuple[bool, ...]) -> bool:
    """Knights' statements are true, knaves' false."""
    return all(truth(s, assign) == assign[i] for i, s in enumerate(statements))


def solutions(statements: list[Statement]) -> list[tuple[bool, ...]]:
    """Every consistent assignment, by brute force over the 2^n."""
    n = len(statements)
    return [a for a in itertools.product((True, False), repeat=n) if consistent(statements, a)]


def random_statement(rng: random.Random, n: int, speaker: int, depth: int) -> Statement:
    """A statement of at most ``depth`` levels; atoms prefer the other people."""
    if depth <= 1 or rng.random() < 0.3:
        others = [p for p in range(n) if p != speaker] or [speaker]
        who = rng.choice(others) if rng.random() < 0.85 else speaker
        atom = ("is", who, rng.random() < 0.5)
        return ("not", atom) if rng.random() < 0.15 else atom
    if rng.random() < 0.1:
        return ("not", random_statement(rng, n, speaker, depth - 1))
    return (rng.choice(OPS), random_statement(rng, n, speaker, depth - 1), random_statement(rng, n, speaker, depth - 1))


def render(s: Statement, names: list[str], lang: str, top: bool = True) -> str:
    """A statement in words; nested compounds are parenthesised so the reading is unique."""
    ph = PHRASES[lang]
    kind = s[0]
    if kind == "is":
        return ph["is"].format(x=names[s[1]], role=ROLE[lang][0 if s[2] else 1])
    if kind == "not":
        inner = s[1]
        if inner[0] == "is":
            return ph["is_not"].format(x=names[inner[1]], role=ROLE[lang][0 if inner[2] else 1])
        return ph["not"].format(s=render(inner, names, lang, top=False))
    text = ph[kind].format(a=render(s[1], names, lang, top=False), b=render(s[2], names, lang, top=False))
    return text if top else f"({text})"


def instance_key(statements: list[Statement]) -> str:
    return hashlib.sha256(repr(statements).encode()).hexdigest()


def split_of(statements: list[Statement], test_share: float = 0.1) -> str:
    """'test' for a fixed ``test_share`` of all instances (by content hash), else 'train'."""
    h = int(instance_key(statements)[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_share else "train"


def random_puzzle(rng: random.Random, n: int, depth: int, split: str | None = None,
                  tries: int = 2000) -> tuple[list[Statement], tuple[bool, ...]]:
    """Statements of n people with exactly one consistent assignment (and in ``split`` if given)."""
    for _ in range(tries):
        statements = [random_statement(rng, n, i, depth) for i in range(n)]
        sols = solutions(statements)
        if len(sols) == 1 and (split is None or split_of(statements) == split):
            return statements, sols[0]
    raise RuntimeError(f"no unique {n}-person puzzle of depth {depth} found in {tries} tries")


def quiz_text(statements: list[Statement], names: list[str], lang: str) -> str:
    ph = PHRASES[lang]
    lines = [ph["intro"].format(n=len(names), names=ph["list_sep"].join(names))]
    lines += [ph["says"].format(x=names[i], s=render(s, names, lang)) for i, s in enumerate(statements)]
    return " ".join(lines + [ph["ask"]]) if lang == "en" else "".join(lines + [ph["ask"]])


def answer_text(names: list[str], solution: list[bool], lang: str = "en") -> str:
    """Logic-RL's form: ``(1) Zoey is a knight`` a line each."""
    ph = PHRASES[lang]
    return "\n".join(f"({i + 1}) " + ph["is"].format(x=x, role=ROLE[lang][0 if k else 1])
                     for i, (x, k) in enumerate(zip(names, solution)))


def parse_roles(text: str, names: list[str]) -> dict[str, bool] | None:
    """{name: knight?} for every name claimed in ``text`` (English or Chinese); None when a name
    is given both roles. Names are matched whole (Liam is not found inside William). Forms:
    ``Zoey is a knight`` / ``is not a knave``, ``Zoey: knight``, ``Zoey and Ava are knights`` (a
    list of names before "are"), and ``小明是骑士`` / ``不是无赖``."""
    claims: dict[str, set[bool]] = {name: set() for name in names}
    alt = "|".join(re.escape(x) for x in sorted(names, key=len, reverse=True))
    who = rf"(?<![\w])({alt})(?![\w])"
    for m in re.finditer(rf"{who}\s*(?:\s+is\s+(not\s+)?(?:an?\s+|the\s+)?|\s*[:=\-–—]\s*(?:an?\s+)?)"
                         r"(knight|knave)s?\b", text, re.I):
        claims[_name(m.group(1), names)].add((m.group(3).lower() == "knight") != bool(m.group(2)))
    group = rf"{who}(?:\s*,\s*{who})*,?\s+(?:and|&)\s+{who}"
    for m in re.finditer(rf"(?:both\s+)?({group})\s+are\s+(?:both\s+|all\s+)?(not\s+)?(knight|knave)s\b", text, re.I):
        knight = (m.group(m.lastindex).lower() == "knight") != bool(m.group(m.lastindex - 1))
        for x in re.findall(who, m.group(1), re.I):
            claims[_name(x, names)].add(knight)
    for name in names:
        for m in re.finditer(rf"{re.escape(name)}\s*(不)?是\s*(?:一[个名位])?\s*(骑士|无赖)", text):
            claims[name].add((m.group(2) == "骑士") != bool(m.group(1)))
    if any(len(c) > 1 for c in claims.values()):
        return None
    return {name: c.pop() for name, c in claims.items() if c}


def _name(found: str, names: list[str]) -> str:
    """The row's spelling of a name matched case-insensitively."""
    return next(x for x in names if x.lower() == found.lower())


@dataclass
class KKStyle:
    """How a corpus solution behaves: tries, a retry after a contradiction only sometimes."""

    first_correct: float = 0.2  # chance a try is the solution (else an untried wrong assignment)
    retry: float = 1.0  # chance a contradiction is followed by "wait, ..." and a new try (else give up)
    max_tries: int = 8


def worked_solution(statements: list[Statement], names: list[str], lang: str, rng: random.Random,
                    style: KKStyle | None = None) -> str:
    """The text after ``<think>``: tries of assignments, each statement checked in order until a
    contradiction ("no") or all hold ("works"); after a contradiction a retry follows with
    probability ``style.retry``, else the text gives up and answers its last (wrong) try.
    A retry flips the person whose statement failed (when that assignment is untried), the
    local repair a person makes, so that a retry is informed by the check rather than a fresh
    guess; otherwise it is the solution (``first_correct``) or any untried assignment."""
    style = style or KKStyle()
    sol = solutions(statements)[0]
    wrong = [a for a in itertools.product((True, False), repeat=len(names)) if a != sol]
    rng.shuffle(wrong)
    role, out, assign, tried = ROLE[lang], [], sol, set()
    flipped = None
    for attempt in range(style.max_tries):
        if flipped is not None and flipped not in tried:
            assign = flipped
        else:
            untried = [a for a in wrong if a not in tried]
            assign = sol if (rng.random() < style.first_correct or not untried) else untried[-1]
        tried.add(assign)
        guess = ", ".join(f"{x} {role[0 if k else 1]}" for x, k in zip(names, assign))
        out.append(("try " if lang == "en" else "假设 ") + guess + (":" if lang == "en" else "："))
        for i, s in enumerate(statements):
            ok = truth(s, assign) == assign[i]
            out.append(f"{names[i]} {'ok' if ok else ('no' if lang == 'en' else '矛盾')}")
            if not ok:
                flipped = assign[:i] + (not assign[i],) + assign[i + 1:]
                break
        else:
            out.append("works" if lang == "en" else "成立")
            break
        if attempt == style.max_tries - 1 or rng.random() >= style.retry:
            break
        out.append(rng.choice(RETRY[lang]))
    return " ".join(out) + "</think><answer>" + answer_text(names, list(assign), lang) + "</answer>"


@dataclass
class KnightsKnavesOptions(TaskOptions):
    template: str = "short"
    data: str = field(default="", metadata={"help": "rows with quiz, names, solution ('' = the generator)"})
    split: str = field(default="test", metadata={"help": "split read from data when examples() gets none"})
    min_people: int = field(default=3, metadata={"help": "fewest people in a generated puzzle (>= 2)"})
    max_people: int = field(default=3, metadata={"help": "most people in a generated puzzle (<= 8)"})
    max_depth: int = field(default=2, metadata={"help": "deepest statement nesting (>= 2; 2 = two atoms joined)"})
    train_size: int = field(default=20000, metadata={"help": "generated training puzzles"})
    test_size: int = field(default=200, metadata={"help": "generated held-out puzzles"})
    seed: int = field(default=0, metadata={"help": "generator seed"})


class KnightsKnaves(Task):
    name = "knights_knaves"
    default_template = "short"
    languages = tuple(PHRASES)

    def __init__(self, options: KnightsKnavesOptions | None = None, **kwargs: Any):
        super().__init__(options or KnightsKnavesOptions(), **kwargs)
        o = self.options
        if not 2 <= o.min_people <= o.max_people <= 8:
            raise ValueError(f"need 2 <= min_people <= max_people <= 8, got {o.min_people}..{o.max_people}")
        if o.max_depth < 2:  # atoms alone make x_i = literal equations: never exactly one solution
            raise ValueError("max_depth must be >= 2 (statements of atoms alone never have a unique solution)")

    def examples(self, split: str | None = None) -> list[dict]:
        o = self.options
        if o.data:
            return self._file_examples(split or o.split)
        if split not in ("train", "test"):
            raise ValueError(f"knights_knaves has splits 'train' and 'test', not {split!r}")
        rng = random.Random(f"kk-{split}-{o.seed}-{o.min_people}-{o.max_people}-{o.max_depth}")
        size = o.train_size if split == "train" else o.test_size
        rows, seen = [], set()
        while len(rows) < size:
            n = rng.randint(o.min_people, o.max_people)
            statements, sol = random_puzzle(rng, n, rng.randint(2, o.max_depth), split)
            key = instance_key(statements)
            if key in seen:
                continue
            seen.add(key)
            key = f"kk-{split}-{len(rows)}"
            lang = example_language(o.language, key)
            names = pick_names(rng, n, lang)
            rows.append({"id": key, "names": names, "statements": _jsonable(statements),
                         "solution": list(sol), "quiz": quiz_text(statements, names, lang),
                         "answer": answer_text(names, list(sol), lang), "people": n, "language": lang})
        return rows

    def _file_examples(self, split: str) -> list[dict]:
        def check(row: dict) -> str | None:
            names, sol = row.get("names"), row.get("solution")
            if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
                return "field 'names': expected a non-empty list of strings"
            if not isinstance(sol, list) or len(sol) != len(names) or not all(isinstance(x, bool) for x in sol):
                return f"field 'solution': expected a list of {len(names)} booleans (true = knight)"
            return None

        rows, _ = read_rows(self.options.data, split, required=("quiz",), validate=check)
        out = []
        for i, row in enumerate(rows):
            ex = {"id": str(row.get("id", f"kk-file-{i}")), **row}
            ex.setdefault("answer", answer_text(row["names"], row["solution"]))
            out.append(ex)
        return out

    def question(self, example: dict) -> str:
        return str(example["quiz"])

    def demonstration(self, example: dict, rng: random.Random) -> str | None:
        """Case analysis until the consistent assignment: generated puzzles, and rows from files
        whose ``statements`` are readable (``read_statements``) and agree with their solution."""
        statements = read_statements(example.get("statements"), len(example.get("names") or []))
        if statements is None or solutions(statements) != [tuple(solution_of(example))]:
            return None
        return worked_solution(statements, list(example["names"]), self.language_of(example), rng, KKStyle(retry=1.0))

    def extract(self, completion: str) -> str | None:
        """The answer tags' content; without them (a model that does not use the tags), the text
        after the last ``</think>``, else — when the prompt did not open a think block — the last
        paragraph: an answer, never the reasoning's trial assignments."""
        ans = self.answer_block(completion)
        if ans:
            return ans
        text = completion if isinstance(completion, str) else ""
        if "</think>" in text:
            return text.rsplit("</think>", 1)[1].strip() or None
        if self.prompt_opens_think():
            return None  # still inside the reasoning
        paragraphs = [x for x in re.split(r"\n\s*\n", text) if x.strip()]
        return paragraphs[-1].strip() if paragraphs else None

    def answer_block(self, completion: str) -> str | None:
        from r1lab.rewards.format import parse_response

        return parse_response(completion, self.prompt_opens_think()).answer

    def grade(self, example: dict, completion: str):
        """Grade, with ``extracted`` the canonical roles (``knight,knave,…`` in name order) for voting."""
        g = super().grade(example, completion)
        if g.extracted is not None:
            roles = parse_roles(g.extracted, list(example["names"]))
            full = roles is not None and len(roles) == len(example["names"])
            g.extracted = ",".join("knight" if roles[x] else "knave" for x in example["names"]) if full else None
        return g

    def check(self, example: dict, answer: str) -> bool:
        names = list(example["names"])
        roles = parse_roles(answer, names)
        if roles is None or len(roles) != len(names):
            return False
        return [roles[x] for x in names] == [bool(v) for v in solution_of(example)]


def solution_of(example: dict) -> list[bool]:
    """The gold roles: ``solution`` (list of booleans), else ``answer`` as booleans or role text."""
    sol = example.get("solution")
    if isinstance(sol, list):
        return [bool(x) for x in sol]
    ans = example.get("answer")
    if isinstance(ans, list):
        return [bool(x) for x in ans]
    roles = parse_roles(str(ans or ""), list(example["names"]))
    if not roles or len(roles) != len(example["names"]):
        raise DataError(f"example {example.get('id')}: no gold solution (solution or answer field)")
    return [roles[x] for x in example["names"]]


# the published K&K sets' names (Logic-RL / "K-and-K", mem-kk-logic's lib_kk) of two of OPS
KK_OPS = {"->": "implies", "<=>": "iff"}


def read_statements(value: Any, people: int) -> list[Statement] | None:
    """Statements in r1lab's form from a row's ``statements`` field, or None when it has none
    or they cannot be read. Two forms: r1lab's own (nested lists, as ``examples`` writes them),
    and the published K&K sets' (a Python literal string: ``(('telling-truth', 1), ('or',
    ('lying', 0), ('not', ('lying', 2))), …)``, with ``->`` and ``<=>``, and/or over two or more
    parts, folded to the left). Never evaluates code: ``ast.literal_eval`` reads literals only."""
    import ast

    def conv(x: Any) -> Statement:
        if not isinstance(x, (list, tuple)) or not x:
            raise ValueError(x)
        head = KK_OPS.get(x[0], x[0]) if isinstance(x[0], str) else x[0]
        if head == "is" and len(x) == 3:
            who, knight = x[1], x[2]
        elif head in ("telling-truth", "lying") and len(x) == 2:
            who, knight = x[1], head == "telling-truth"
        elif head == "not" and len(x) == 2:
            return ("not", conv(x[1]))
        elif head in OPS:
            parts = [conv(p) for p in x[1:]]
            if len(parts) < 2 or (head not in ("and", "or") and len(parts) != 2):
                raise ValueError(x)
            out = parts[0]
            for p in parts[1:]:
                out = (head, out, p)
            return out
        else:
            raise ValueError(x)
        if not isinstance(who, int) or not 0 <= who < people or not isinstance(knight, bool):
            raise ValueError(x)
        return ("is", who, knight)

    try:
        raw = ast.literal_eval(value) if isinstance(value, str) else value
        if not isinstance(raw, (list, tuple)) or len(raw) != people:
            return None
        return [conv(s) for s in raw]
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _jsonable(statements: list[Statement]) -> list:
    """Statements as nested lists (examples are written to JSON files)."""
    return [_as_list(s) for s in statements]


def _as_list(s: Statement) -> list:
    return [x if not isinstance(x, tuple) else _as_list(x) for x in s]

