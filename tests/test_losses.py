"""CLO loss and metrics against values derived by hand from the paper's equation."""

import math

import mlx.core as mx
import numpy as np
import pytest

from clo_mlx.losses import clo_loss, mean_token_nll


@pytest.mark.parametrize("beta,lam", [(0.1, 0.5), (0.5, 0.0), (0.05, 1.0), (1.0, 0.3)])
def test_clo_loss_hand_derived(beta, lam):
    """Two pairs with beta * h = +ln 3 and -ln 3, so every value is known in closed form:
    -log sigmoid(ln 3) = log(4/3), -log sigmoid(-ln 3) = log 4 (sigmoid(ln 3) = 3/4)."""
    d = math.log(3) / beta  # so that beta * d = ln 3
    pc, rc = [-20.0 + d, -30.0], [-20.0, -30.0]  # pair 0: chosen gained d over the reference
    pr, rr = [-25.0, -35.0 + d], [-25.0, -35.0]  # pair 1: rejected gained d
    loss, m = clo_loss(*(mx.array(a) for a in (pc, pr, rc, rr)), mx.array(2.0), beta=beta, lam=lam)

    dpo = (math.log(4 / 3) + math.log(4)) / 2
    assert loss.item() == pytest.approx(lam * 2.0 + (1 - lam) * dpo, rel=1e-5)
    assert m["loss/dpo"].item() == pytest.approx(dpo, rel=1e-5)
    assert m["nll/target"].item() == pytest.approx(2.0)
    # rewards = beta * (policy - reference): chosen (ln 3, 0), rejected (0, ln 3)
    assert m["rewards/chosen"].item() == pytest.approx(math.log(3) / 2, rel=1e-5)
    assert m["rewards/rejected"].item() == pytest.approx(math.log(3) / 2, rel=1e-5)
    assert m["rewards/margins"].item() == pytest.approx(0.0, abs=1e-5)
    assert m["rewards/accuracies"].item() == 0.5  # pair 0 only
    assert m["logps/chosen"].item() == pytest.approx((-50.0 + d) / 2, rel=1e-6)
    assert m["logps/rejected"].item() == pytest.approx((-60.0 + d) / 2, rel=1e-6)


def test_dpo_at_equal_policy_and_reference_is_log2():
    x = mx.array([-10.0, -20.0, -30.0])
    loss, m = clo_loss(x, x, x, x, mx.array(0.0), beta=0.1, lam=0.0)
    assert loss.item() == pytest.approx(np.log(2), rel=1e-6)
    assert m["rewards/accuracies"].item() == 0.0


def test_mean_token_nll_selects_weighted_sequences():
    logps = mx.array([-10.0, -4.0, -9.0])
    ntok = mx.array([5.0, 2.0, 3.0])
    w = mx.array([1.0, 0.0, 1.0])
    assert mean_token_nll(logps, ntok, w).item() == pytest.approx(19.0 / 8.0)
    assert mean_token_nll(logps, ntok, mx.zeros(3)).item() == 0.0
