"""CLO's preference-term variants (clo.preference) against hand-computed numpy values."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from clo_mlx.config import ConfigError, build_config
from clo_mlx.losses import PREFERENCE_LOSSES, clo_loss, dpo_terms

PC = np.array([-12.0, -30.0, -8.0, -20.0])
PR = np.array([-15.0, -25.0, -9.0, -20.5])
RC = np.array([-13.0, -28.0, -8.5, -21.0])
RR = np.array([-16.0, -27.0, -10.0, -20.0])
NC = np.array([4.0, 10.0, 2.0, 5.0])  # chosen / rejected token counts (SimPO)
NR = np.array([5.0, 8.0, 3.0, 6.0])
H = (PC - RC) - (PR - RR)  # [0., -4., -0.5, 1.5]


def _np_loss(pref: str, beta: float, gamma: float, pc=PC, pr=PR) -> np.ndarray:
    h = (pc - RC) - (pr - RR)
    if pref == "sigmoid":
        return np.logaddexp(0.0, -beta * h)
    if pref == "ipo":  # length-normalised log-probs (IPO paper, TRL)
        h = (pc / NC - RC / NC) - (pr / NR - RR / NR)
        return (h - 1 / (2 * beta)) ** 2
    if pref == "hinge":
        return np.maximum(0.0, 1 - beta * h)
    z = beta * (pc / NC - pr / NR) - gamma
    return np.logaddexp(0.0, -z)


def _mx(*arrays):
    return [mx.array(a.astype(np.float32)) for a in arrays]


def test_hand_values_of_each_term():
    assert H.tolist() == [0.0, -4.0, -0.5, 1.5]
    # Hand-derived for beta = 0.5, gamma = 0.5 (pair 0: h = 0; pair 3: h = 1.5):
    losses = {
        p: np.array(dpo_terms(*_mx(PC, PR, RC, RR), beta=0.5, preference=p,
                              chosen_tokens=mx.array(NC), rejected_tokens=mx.array(NR),
                              gamma=0.5)[0])
        for p in PREFERENCE_LOSSES
    }  # fmt: skip
    assert losses["sigmoid"][0] == pytest.approx(np.log(2))  # -log sigmoid(0)
    # IPO pair 0: h = (-12/4 + 13/4) - (-15/5 + 16/5) = 0.25 - 0.2 = 0.05; (0.05 - 1)^2
    assert losses["ipo"][0] == pytest.approx(0.9025, rel=1e-5)
    # pair 3: h = (-20/5 + 21/5) - (-20.5/6 + 20/6) = 0.2 + 1/12; (17/60 - 1)^2 = (43/60)^2
    assert losses["ipo"][3] == pytest.approx((43 / 60) ** 2, rel=1e-5)
    assert losses["hinge"][0] == pytest.approx(1.0)  # max(0, 1 - 0)
    assert losses["hinge"][1] == pytest.approx(3.0)  # max(0, 1 + 2)
    assert losses["hinge"][3] == pytest.approx(0.25)  # max(0, 1 - 0.75)
    # SimPO pair 0: 0.5 * (-12/4 - -15/5) - 0.5 = -0.5
    assert losses["simpo"][0] == pytest.approx(np.log1p(np.exp(0.5)), rel=1e-6)


@pytest.mark.parametrize("pref", PREFERENCE_LOSSES)
@pytest.mark.parametrize("beta,lam,gamma", [(0.1, 0.5, 0.5), (0.5, 0.0, 1.0), (2.0, 0.3, 0.0)])
def test_clo_loss_with_each_preference_matches_numpy(pref, beta, lam, gamma):
    nll = 2.5
    loss, m = clo_loss(
        *_mx(PC, PR, RC, RR),
        mx.array(nll),
        beta=beta,
        lam=lam,
        preference=pref,
        chosen_tokens=mx.array(NC.astype(np.float32)),
        rejected_tokens=mx.array(NR.astype(np.float32)),
        gamma=gamma,
    )
    term = _np_loss(pref, beta, gamma)
    assert loss.item() == pytest.approx(lam * nll + (1 - lam) * term.mean(), rel=1e-5)
    assert m["loss/dpo"].item() == pytest.approx(term.mean(), rel=1e-5)
    if pref == "simpo":  # reference-free, length-normalised rewards
        rc, rr = beta * PC / NC, beta * PR / NR
    elif pref == "ipo":  # length-normalised log-probs
        rc, rr = beta * (PC - RC) / NC, beta * (PR - RR) / NR
    else:
        rc, rr = beta * (PC - RC), beta * (PR - RR)
    assert m["rewards/chosen"].item() == pytest.approx(rc.mean(), rel=1e-5, abs=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(rr.mean(), rel=1e-5, abs=1e-6)
    assert m["rewards/margins"].item() == pytest.approx((rc - rr).mean(), rel=1e-5, abs=1e-6)
    assert m["rewards/accuracies"].item() == pytest.approx(np.mean(rc > rr))


@pytest.mark.parametrize("pref", ["ipo", "hinge", "simpo"])
def test_gradients_match_numpy(pref):
    """d loss / d policy log-probs against central finite differences of the numpy loss."""
    beta, gamma = 0.5, 0.3

    def mx_loss(pc, pr):
        losses, _, _ = dpo_terms(pc, pr, *_mx(RC, RR), beta=beta, preference=pref,
                                 chosen_tokens=mx.array(NC), rejected_tokens=mx.array(NR),
                                 gamma=gamma)  # fmt: skip
        return losses.mean()

    g_pc, g_pr = mx.grad(mx_loss, argnums=(0, 1))(*_mx(PC, PR))

    def np_loss(pc, pr):
        return _np_loss(pref, beta, gamma, pc, pr).mean()

    eps = 1e-4
    for i in range(len(PC)):
        d = np.zeros_like(PC)
        d[i] = eps
        num_pc = (np_loss(PC + d, PR) - np_loss(PC - d, PR)) / (2 * eps)
        num_pr = (np_loss(PC, PR + d) - np_loss(PC, PR - d)) / (2 * eps)
        assert np.array(g_pc)[i] == pytest.approx(num_pc, abs=1e-3)
        assert np.array(g_pr)[i] == pytest.approx(num_pr, abs=1e-3)


def test_config_accepts_variants_and_rejects_unknown():
    cfg = build_config(overrides={"clo": {"preference": "simpo", "simpo_gamma": 1.0}})
    assert cfg.clo["preference"] == "simpo" and cfg.clo["simpo_gamma"] == 1.0
    assert cfg.clo["beta"] == 0.1  # other clo keys keep their defaults
    with pytest.raises(ConfigError, match="clo.preference must be one of"):
        build_config(overrides={"clo": {"preference": "kto"}})
    with pytest.raises(ValueError, match="preference must be one of"):
        dpo_terms(*_mx(PC, PR, RC, RR), beta=0.1, preference="kto")
