"""ECE, Brier and reliability bins against sklearn and hand-computed values."""
import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from reports import calibration as C


def test_brier_matches_sklearn_and_hand_value():
    p = np.array([[.7, .2, .1], [.1, .8, .1], [.3, .3, .4]])
    y = np.array([0, 2, 2])
    hand = ((.3 ** 2 + .2 ** 2 + .1 ** 2) + (.1 ** 2 + .8 ** 2 + .9 ** 2) + (.3 ** 2 + .3 ** 2 + .6 ** 2)) / 3
    assert C.brier(y, p) == pytest.approx(hand)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), 200)
    yy = rng.integers(0, 5, 200)
    assert C.brier(yy, probs) == pytest.approx(brier_score_loss(yy, probs, labels=range(5)))


def test_ece_hand_example():
    # two images at confidence 0.9 (one right), two at 0.6 (both right)
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0])
    # bins: 0.9 -> |0.5 - 0.9| weight 1/2 ; 0.6 -> |1.0 - 0.6| weight 1/2
    assert C.ece(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_ece_zero_when_confident_and_right_and_edges():
    p = np.eye(3)[[0, 1, 2, 1]]
    r = C.reliability([0, 1, 2, 1], p)
    assert C.ece([0, 1, 2, 1], p) == pytest.approx(0.0)
    assert r["count"][-1] == 4 and sum(r["count"]) == 4  # confidence 1.0 lands in the last bin


def test_ece_near_zero_for_calibrated_simulation():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < conf
    y = np.where(correct, 0, 1)
    p = np.stack([conf, 1 - conf], 1)
    assert C.ece(y, p) < 0.02
    assert C.ece(1 - y, p) > 0.4  # the same confidences, always wrong when confident
