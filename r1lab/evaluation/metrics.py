"""Evaluation metrics as DeepSeek-R1 reports them: pass@1 over k samples, cons@k, unbiased pass@k.

For a problem with n samples of which c are correct:

- pass@1 = c / n (mean correctness over the samples), averaged over problems. R1 samples k
  outputs at temperature 0.6, top-p 0.95, and reports exactly this.
- pass@k (unbiased, Chen et al. 2021) = 1 − C(n−c, k) / C(n, k)
  = 1 − ∏_{i=n−c+1}^{n} (1 − k/i), the product form (no huge binomials), averaged over problems.
- cons@k = is the answer chosen by majority vote over the extracted answers correct?
  (R1's cons@64.) Ties go to the answer seen first; a problem with no answer at all is wrong.

Usage::

    stats = summarize(grades)          # grades[problem][sample] = Grade
    stats["pass@1"], stats["cons@k"], stats["pass@4"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from r1lab.tasks.base import Grade


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 − C(n−c, k)/C(n, k) for n samples with c correct.

    Example: n=5, c=2, k=2 -> 1 − C(3,2)/C(5,2) = 1 − 3/10 = 0.7.
    Raises ValueError unless 0 ≤ c ≤ n and 1 ≤ k ≤ n.
    """
    if not (0 <= c <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not (1 <= k <= n):
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return float(1.0 - prod)


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """Index of a sample carrying the most common non-None answer (the earliest such sample;
    ties between answers go to the one that appears first). None if every answer is None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, a in enumerate(answers):
        if a is not None and counts[a] == best:
            return i
    return None  # unreachable


def default_ks(n: int) -> tuple[int, ...]:
    """Powers of two up to n, plus n itself: n=6 -> (1, 2, 4, 6)."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return tuple(ks)


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def summarize(
    grades: Sequence[Sequence[Grade]],
    lengths: Sequence[Sequence[int]] | None = None,
    ks: tuple[int, ...] | None = None,
) -> dict:
    """Metrics over problems: ``grades[p][s]`` is sample s of problem p.

    Returns ``n_problems``, ``k`` (samples per problem; the minimum when rows differ, then also
    ``k_note``), ``pass@1`` (mean correctness over all of a problem's samples, averaged over
    problems), ``cons@k`` (majority vote over all samples), ``pass@{k}`` for ``ks`` (default:
    powers of two up to k, plus k; each problem uses its own n), ``format_rate`` (per problem,
    then averaged), ``mean_length`` (over all samples, if ``lengths``), ``grader_errors`` (count).
    Raises ValueError for no problems, a problem with no samples, or a k above the minimum.
    """
    if not grades:
        raise ValueError("summarize: no problems to summarise")
    sizes = [len(row) for row in grades]
    if min(sizes) == 0:
        raise ValueError(f"summarize: problem {sizes.index(0)} has no samples")
    k_min, k_max = min(sizes), max(sizes)
    ks = tuple(ks) if ks else default_ks(k_min)
    if max(ks) > k_min or min(ks) < 1:
        raise ValueError(
            f"summarize: pass@k needs 1 <= k <= {k_min} (the fewest samples of a problem), got {ks}"
        )
    out: dict = {"n_problems": len(grades), "k": k_min}
    if k_max != k_min:
        out["k_note"] = f"problems have {k_min} to {k_max} samples; k is the minimum, pass@1 uses all samples"
    correct = [[bool(g.correct) for g in row] for row in grades]
    out["pass@1"] = _mean([sum(row) / len(row) for row in correct])
    votes = [majority_vote([g.extracted for g in row]) for row in grades]
    out["cons@k"] = _mean([float(v is not None and row[v]) for v, row in zip(votes, correct)])
    for k in ks:
        if k != 1:
            out[f"pass@{k}"] = _mean([pass_at_k(len(row), sum(row), k) for row in correct])
    out["format_rate"] = _mean([sum(bool(g.format_ok) for g in row) / len(row) for row in grades])
    if lengths is not None:
        flat = [float(x) for row in lengths for x in row]
        out["mean_length"] = _mean(flat)
    out["grader_errors"] = sum(1 for row in grades for g in row if g.error)
    return out
