"""CLO's preference-term variants (clo.preference) against values derived by hand."""

from __future__ import annotations

import math

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


def softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# beta = 0.5, gamma = 0.5, by hand from the arrays above (P = 4 pairs):
# beta * h = [0, -2, -0.25, 0.75]; SimPO: pc/nc = [-3, -3, -4, -4], pr/nr = [-3, -25/8, -3, -41/12]
# so z = beta * (pc/nc - pr/nr) - gamma = [-1/2, -7/16, -1, -19/24].
# IPO (length-normalised, as the IPO paper and TRL): (pc - rc)/nc = [1/4, -1/5, 1/4, 1/5],
# (pr - rr)/nr = [1/5, 1/4, 1/3, -1/12], so h = [1/20, -9/20, -1/12, 17/60].
Z_SIMPO = [-0.5, -7 / 16, -1.0, -19 / 24]
H_IPO = [1 / 20, -9 / 20, -1 / 12, 17 / 60]
TERMS = {
    "sigmoid": [math.log(2), softplus(2.0), softplus(0.25), softplus(-0.75)],
    "ipo": [(h - 1) ** 2 for h in H_IPO],  # (h - 1/(2 beta))^2
    "hinge": [1.0, 3.0, 1.25, 0.25],  # max(0, 1 - beta * h)
    "simpo": [softplus(-z) for z in Z_SIMPO],
}
# mean rewards (chosen, rejected) and accuracy:
# beta * (pc - rc) = 0.5 * [1, -2, 0.5, 1] -> 0.0625; beta * (pr - rr) = 0.5 * [1, 2, 1, -0.5] -> 0.4375
# SimPO: beta * pc/nc -> -1.75; beta * pr/nr -> -301/192. Only one pair of four wins in both.
# IPO: beta * (pc - rc)/nc -> 0.0625; beta * (pr - rr)/nr -> 0.5 * 0.7 / 4; pairs 0 and 3 win.
REWARDS = {
    "dpo": (0.0625, 0.4375, 0.25),
    "simpo": (-1.75, -301 / 192, 0.25),
    "ipo": (0.0625, 0.0875, 0.5),
}
# d mean(term) / d pc_i and d / d pr_i, with P = 4:
GRAD_PC = {
    "sigmoid": [-0.5 * sigmoid(-bh) / 4 for bh in (0.0, -2.0, -0.25, 0.75)],
    "ipo": [2 * (h - 1) / nc / 4 for h, nc in zip(H_IPO, NC, strict=True)],
    "hinge": [-0.5 / 4] * 4,  # 1 - beta * h > 0 for every pair
    "simpo": [-sigmoid(-z) * 0.5 / nc / 4 for z, nc in zip(Z_SIMPO, NC, strict=True)],
}
GRAD_PR = {
    "sigmoid": [-g for g in GRAD_PC["sigmoid"]],
    "ipo": [-2 * (h - 1) / nr / 4 for h, nr in zip(H_IPO, NR, strict=True)],
    "hinge": [-g for g in GRAD_PC["hinge"]],
    "simpo": [sigmoid(-z) * 0.5 / nr / 4 for z, nr in zip(Z_SIMPO, NR, strict=True)],
}


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
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_clo_loss_with_each_preference_hand_derived(pref, lam):
    loss, m = clo_loss(
        *_mx(PC, PR, RC, RR),
        mx.array(2.5),
        beta=0.5,
        lam=lam,
        preference=pref,
        chosen_tokens=mx.array(NC.astype(np.float32)),
        rejected_tokens=mx.array(NR.astype(np.float32)),
        gamma=0.5,
    )
    term = sum(TERMS[pref]) / 4
    assert loss.item() == pytest.approx(lam * 2.5 + (1 - lam) * term, rel=1e-5)
    assert m["loss/dpo"].item() == pytest.approx(term, rel=1e-5)
    chosen, rejected, accuracy = REWARDS.get(pref, REWARDS["dpo"])
    assert m["rewards/chosen"].item() == pytest.approx(chosen, rel=1e-5)
    assert m["rewards/rejected"].item() == pytest.approx(rejected, rel=1e-5)
    assert m["rewards/margins"].item() == pytest.approx(chosen - rejected, rel=1e-5)
    assert m["rewards/accuracies"].item() == accuracy


@pytest.mark.parametrize("pref", PREFERENCE_LOSSES)
def test_gradients_hand_derived(pref):
    """d mean(loss) / d policy log-probs, derived by hand (see GRAD_PC)."""

    def mx_loss(pc, pr):
        losses, _, _ = dpo_terms(pc, pr, *_mx(RC, RR), beta=0.5, preference=pref,
                                 chosen_tokens=mx.array(NC), rejected_tokens=mx.array(NR),
                                 gamma=0.5)  # fmt: skip
        return losses.mean()

    g_pc, g_pr = mx.grad(mx_loss, argnums=(0, 1))(*_mx(PC, PR))
    np.testing.assert_allclose(np.array(g_pc), GRAD_PC[pref], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.array(g_pr), GRAD_PR[pref], rtol=1e-5, atol=1e-7)


def test_config_accepts_variants_and_rejects_unknown():
    cfg = build_config(overrides={"clo": {"preference": "simpo", "simpo_gamma": 1.0}})
    assert cfg.clo["preference"] == "simpo" and cfg.clo["simpo_gamma"] == 1.0
    assert cfg.clo["beta"] == 0.1  # other clo keys keep their defaults
    with pytest.raises(ConfigError, match="clo.preference must be one of"):
        build_config(overrides={"clo": {"preference": "kto"}})
    with pytest.raises(ValueError, match="preference must be one of"):
        dpo_terms(*_mx(PC, PR, RC, RR), beta=0.1, preference="kto")
