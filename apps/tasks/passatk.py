"""pass@k: the unbiased estimator of Chen et al. (2021), per task, averaged over tasks.

For a task with ``n`` samples of which ``c`` passed, pass@k = 1 - C(n-c, k) / C(n, k): the chance
that at least one of ``k`` samples drawn without replacement passes. It is defined for ``k <= n``
only; a k larger than some task's sample count is reported as not computable (``None``), never as
a number computed from fewer samples.
"""

from __future__ import annotations

from math import prod


def estimate(n: int, c: int, k: int) -> float:
    """pass@k of one task (``k <= n``), computed as the product form the reference code uses."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@{k} is not defined for n={n}, c={c}")
    if n - c < k:
        return 1.0
    return 1.0 - prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k(counts: dict[str, tuple[int, int]], ks: list[int]) -> tuple[dict[str, float | None], dict[str, list]]:
    """({k: mean pass@k over tasks, or None}, {k: the tasks with fewer than k samples}) for ``counts``
    {task: (n, c)} of judged samples. No task judged yet: every k is None."""
    values: dict[str, float | None] = {}
    short: dict[str, list] = {}
    for k in ks:
        too_few = sorted(task for task, (n, _c) in counts.items() if n < k)
        if too_few or not counts:
            values[str(k)] = None
            if too_few:
                short[str(k)] = too_few
            continue
        values[str(k)] = sum(estimate(n, c, k) for n, c in counts.values()) / len(counts)
    return values, short
