"""CLO loss and metrics against a numpy reference of the paper's equation."""

import mlx.core as mx
import numpy as np
import pytest

from clo_mlx.losses import clo_loss, mean_token_nll


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("beta,lam", [(0.1, 0.5), (0.5, 0.0), (0.05, 1.0), (1.0, 0.3)])
def test_clo_loss_matches_numpy(beta, lam):
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-50, 10, 6).astype(np.float32) for _ in range(4))
    nll = np.float32(2.7)
    loss, m = clo_loss(*(mx.array(a) for a in (pc, pr, rc, rr)), mx.array(nll), beta=beta, lam=lam)

    h = (pc - rc) - (pr - rr)
    dpo = np.mean(-np_log_sigmoid(beta * h))
    np.testing.assert_allclose(loss.item(), lam * nll + (1 - lam) * dpo, rtol=1e-5)
    np.testing.assert_allclose(m["loss/dpo"].item(), dpo, rtol=1e-5)
    np.testing.assert_allclose(m["nll/target"].item(), nll, rtol=1e-6)
    np.testing.assert_allclose(m["rewards/chosen"].item(), np.mean(beta * (pc - rc)), rtol=1e-4)
    np.testing.assert_allclose(m["rewards/rejected"].item(), np.mean(beta * (pr - rr)), rtol=1e-4)
    np.testing.assert_allclose(m["rewards/margins"].item(), np.mean(beta * h), rtol=1e-4, atol=1e-6)
    assert m["rewards/accuracies"].item() == pytest.approx(np.mean(h > 0))
    np.testing.assert_allclose(m["logps/chosen"].item(), pc.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["logps/rejected"].item(), pr.mean(), rtol=1e-6)


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
