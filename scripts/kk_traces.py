"""How right a model's Knights and Knaves reasoning is, read from the traces of an ``r1lab eval``.

    r1lab eval --model M --task knights_knaves --limit 200 --k 8 --output-dir runs/eval-kk
    python scripts/kk_traces.py runs/eval-kk/eval.json

The corpus's traces (``knights_knaves.worked_solution``) try an assignment and compute each
statement under it: ``try Zoey=knight, Oliver=knave, Ava=knight: Zoey says: Oliver is a knave?
Oliver=knave true and Ava is a knave? Ava=knight false = false, Zoey=knight: no wait, … try …``. This reads every try and
check written in English responses and scores each step against the truth of the puzzle (the
held-out generated puzzles, found again by id): the statement copied from the prompt, the
speaker's role copied from the try, each atom's looked-up role and value, the statement's value, the verdict (a knight's statement must
be true, a knave's false), whether a retry flips the person whose statement failed, and whether
the answer is the last try. Prints one JSON line of rates. A diagnostic, not a metric r1lab
trains on: it depends on the corpus's wording.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter

from r1lab.tasks import get_task
from r1lab.tasks.knights_knaves import _as_tuple, parse_roles, render, truth

TRY = re.compile(r"try ((?:\w+=(?:knight|knave)(?:, )?)+): (.*?)(?: wait,.*)?$", re.S)
CHECK = re.compile(r"^(\w+) says: (.*), (\w+)=(knight|knave): (ok|no)$")
ATOM = re.compile(r"(\w+) is (not )?an? (knight|knave)\? (\w+)=(knight|knave) (true|false)")
COMPUTED = re.compile(r"\? \w+=\w+ (true|false)| = (true|false)")


def stats(records: list[dict], examples: dict[str, dict]) -> dict:
    n = Counter()
    for rec in records:
        ex = examples.get(rec["id"])
        if ex is None:
            continue
        names, sol = ex["names"], tuple(ex["solution"])
        statements = [_as_tuple(s) for s in ex["statements"]]
        for text in rec["responses"]:
            think, _, answer = text.partition("</think>")
            tries = []
            for part in re.split(r"(?:^|(?<=\. ))(?=try )", think):
                m = TRY.match(part.strip())
                if not m:
                    continue
                people = re.findall(r"(\w+)=(knight|knave)", m.group(1))
                if [x for x, _ in people] != names:
                    n["tries_misnamed"] += 1
                    continue
                assign = tuple(r == "knight" for _, r in people)
                checks = [c for c in m.group(2).split("; ") if c != "works"]
                tries.append((assign, checks, m.group(2).endswith("works")))
            n["responses"] += 1
            n["responses_with_tries"] += bool(tries)
            for t, (assign, checks, works) in enumerate(tries):
                n["tries"] += 1
                n["tries_right"] += assign == sol
                n["works_said"] += works
                n["works_right"] += works and all(truth(s, assign) == assign[i] for i, s in enumerate(statements))
                failed = None
                for c in checks:
                    m = CHECK.match(c)
                    if not m or m.group(1) not in names:
                        n["checks_unparsed"] += 1
                        continue
                    i = names.index(m.group(1))
                    n["checks"] += 1
                    n["statement_copied"] += COMPUTED.sub("", m.group(2)) == render(statements[i], names, "en")
                    n["speaker_role_right"] += m.group(3) == m.group(1) and (m.group(4) == "knight") == assign[i]
                    for who, neg, role, again, looked, value in ATOM.findall(m.group(2)):
                        if who not in names:
                            continue
                        j = names.index(who)
                        n["atoms"] += 1
                        n["atom_lookup_right"] += again == who and (looked == "knight") == assign[j]
                        n["atom_value_right"] += (value == "true") == (((looked == "knight") == (role == "knight")) != bool(neg))
                    said = m.group(2).rsplit(" ", 1)[-1]
                    true = truth(statements[i], assign)
                    n["statement_value_right"] += (said == "true") == true
                    consistent = true == assign[i]
                    n["verdict_right"] += (m.group(5) == "ok") == consistent
                    n["verdict_follows_own_value"] += (m.group(5) == "ok") == ((said == "true") == (m.group(4) == "knight"))
                    if m.group(5) == "no":
                        failed = i
                        break
                if t + 1 < len(tries) and failed is not None:
                    n["retries_after_no"] += 1
                    flip = assign[:failed] + (not assign[failed],) + assign[failed + 1:]
                    n["retry_flips_failed"] += tries[t + 1][0] == flip
            roles = parse_roles(answer, names)
            if tries and roles and len(roles) == len(names):
                n["answers_parsed"] += 1
                n["answer_is_last_try"] += tuple(roles[x] for x in names) == tries[-1][0]
    rate = {k: round(n[k] / max(n[d], 1), 3) for k, d in [
        ("responses_with_tries", "responses"), ("tries_right", "tries"), ("statement_copied", "checks"),
        ("speaker_role_right", "checks"),
        ("atom_lookup_right", "atoms"), ("atom_value_right", "atoms"), ("statement_value_right", "checks"),
        ("verdict_right", "checks"), ("verdict_follows_own_value", "checks"), ("works_right", "works_said"),
        ("retry_flips_failed", "retries_after_no"), ("answer_is_last_try", "answers_parsed")]}
    return {"counts": {k: n[k] for k in ("responses", "tries", "checks", "atoms", "retries_after_no")}, **rate,
            "tries_per_response": round(n["tries"] / max(n["responses"], 1), 2)}


def main(path: str) -> None:
    data = json.load(open(path))
    task = get_task("knights_knaves")
    examples = {e["id"]: e for e in task.examples("test")}
    print(json.dumps(stats(data["records"], examples)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/kk_traces.py EVAL_JSON")
    main(sys.argv[1])
