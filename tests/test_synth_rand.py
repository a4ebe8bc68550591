"""training/synth/rand.py: Choices draws exactly what numpy's Generator.choice draws, and uniform what
Generator.uniform draws, from the same state."""
from __future__ import annotations

import numpy as np
import pytest

from training.synth.rand import Choices, uniform


@pytest.mark.parametrize("options, p", [
    (["bald", "short", "long"], [0.1, 0.6, 0.3]),
    ([0.12, 0.45, 1.0, 1.9], [0.15, 0.4, 0.1, 0.35]),
    (list(range(8)), [0.3, 0.25, 0.15, 0.08, 0.08, 0.04, 0.07, 0.03]),
    (["a", "b"], [0.0, 1.0]),                      # a zero weight is never drawn
    ([0, 1, 2, 3, 9], None),
    ([-1.0, 1.0], None),
])
def test_draws_equal_numpys_choice_and_leave_the_same_state(options, p):
    pick = Choices(options, p)
    for seed in range(20):
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(200):
            mine = pick.draw(ours)
            ref = theirs.choice(options, p=p) if p is not None else theirs.choice(options)
            assert mine == ref and type(mine) is type(options[0])
        assert ours.random() == theirs.random()  # the generators moved in step


def test_probabilities_are_followed():
    pick = Choices(["x", "y", "z"], [0.2, 0.5, 0.3])
    rng = np.random.default_rng(0)
    draws = [pick.draw(rng) for _ in range(20000)]
    freq = [draws.count(k) / len(draws) for k in "xyz"]
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)


@pytest.mark.parametrize("options, p", [([], None), (["a", "b"], [0.5]), (["a", "b"], [0.7, 0.7]),
                                        (["a", "b"], [-0.2, 1.2])])
def test_bad_options_or_probabilities_are_refused(options, p):
    with pytest.raises(ValueError, match="Choices"):
        Choices(options, p)


def test_uniform_equals_numpys_uniform_bit_for_bit_and_leaves_the_same_state():
    bounds = np.random.default_rng(0).uniform(-5, 5, (2000, 2))
    bounds.sort(axis=1)
    cases = [tuple(b) for b in bounds] + [(0, 6), (-np.pi, np.pi), (0.12, 0.45), (2.0, 2.0), (1, 1.5)]
    for seed in range(5):
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        for lo, hi in cases:
            mine, ref = uniform(ours, lo, hi), theirs.uniform(lo, hi)
            assert np.float64(mine).tobytes() == np.float64(ref).tobytes()
        assert ours.random() == theirs.random()
