"""English-retention terms of the CLO loss (DPOP per pair kind, English anchor) against
hand-computed values, and their wiring through the config and the training step."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest

from clo_mlx.config import ConfigError, build_config
from clo_mlx.losses import clo_loss

# Pair 0 (kind en): its chosen log-prob fell 2 nats below the reference's; pair 1 (tgt): rose.
PC, PR, RC, RR = [-10.0, -5.0], [-12.0, -7.0], [-8.0, -6.0], [-9.0, -6.0]
NC = [4.0, 3.0]
IS_EN = [1.0, 0.0]


def _loss(**kw):
    a = [mx.array(x) for x in (PC, PR, RC, RR)]
    return clo_loss(*a, mx.array(0.0), beta=0.1, lam=0.0, chosen_tokens=mx.array(NC), **kw)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_dpop_hand_value_and_gradient():
    # h = (pc - rc) - (pr - rr) = [1, 2]; drop = max(0, rc - pc) = [2, 0]
    # mu = [2, 0] (dpop_en = 2 on pair 0): h' = [1 - 4, 2] = [-3, 2]
    # loss = mean(-log sigmoid(0.1 h')) = (softplus(0.3) + softplus(-0.2)) / 2
    loss, m = _loss(dpop_weight=mx.array([2.0, 0.0]))
    expected = (softplus(0.3) + softplus(-0.2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx((0.854355 + 0.598139) / 2, rel=1e-5)
    # reported chosen rewards are TRL's beta * (pc - rc), without the penalty
    assert m["rewards/chosen"].item() == pytest.approx((0.1 * -2 + 0.1 * 1) / 2, rel=1e-6)
    assert m["logps/chosen_drop"].item() == pytest.approx(1.0)
    # d loss / d pc_0 = -(1/2) * beta * (1 + mu) * sigmoid(-beta h'_0)
    g = mx.grad(
        lambda pc: clo_loss(
            pc, *(mx.array(x) for x in (PR, RC, RR)), mx.array(0.0), beta=0.1, lam=0.0,
            dpop_weight=mx.array([2.0, 0.0]),
        )[0]
    )(mx.array(PC))  # fmt: skip
    sig = 1 / (1 + math.exp(-0.3))
    assert g[0].item() == pytest.approx(-0.5 * 0.1 * 3 * sig, rel=1e-5)
    assert g[1].item() == pytest.approx(-0.5 * 0.1 * (1 / (1 + math.exp(0.2))), rel=1e-5)


def test_dpop_with_ipo_reports_unpenalised_rewards():
    # IPO compares per-token log-probs: rewards/chosen = mean(beta * (pc - rc) / |yc|)
    _, m = _loss(dpop_weight=mx.array([2.0, 0.0]), preference="ipo",
                 rejected_tokens=mx.array([5.0, 2.0]))  # fmt: skip
    assert m["rewards/chosen"].item() == pytest.approx(0.1 * (-2 / 4 + 1 / 3) / 2, rel=1e-5)


def test_dpop_zero_weight_is_plain_dpo():
    plain, _ = _loss()
    zero, _ = _loss(dpop_weight=mx.array([0.0, 0.0]))
    assert zero.item() == pytest.approx(plain.item(), rel=1e-7)
    assert plain.item() == pytest.approx((softplus(-0.1) + softplus(-0.2)) / 2, rel=1e-6)


def test_anchor_hand_value():
    # anchor = alpha * (1/P) * sum_en max(0, rc - pc) / |yc| = 0.5 * (2 / 4) / 2 = 0.125
    plain, _ = _loss()
    loss, m = _loss(anchor_weight=mx.array([0.5, 0.0]))
    assert m["loss/anchor_en"].item() == pytest.approx(0.125)
    assert loss.item() == pytest.approx(plain.item() + 0.125, rel=1e-6)
    # one-sided: a chosen log-prob above the reference's costs nothing
    _, m2 = _loss(anchor_weight=mx.array([0.0, 5.0]))
    assert m2["loss/anchor_en"].item() == 0.0


def test_config_keys_and_validation():
    cfg = build_config(overrides={"clo": {"dpop_en": 5, "anchor_en": 1.0}})
    assert cfg.clo["dpop_en"] == 5.0 and cfg.clo["dpop_tgt"] == 0.0
    with pytest.raises(ConfigError, match="clo.dpop_tgt must be >= 0"):
        build_config(overrides={"clo": {"dpop_tgt": -1}})
    with pytest.raises(ConfigError, match="simpo"):
        build_config(overrides={"clo": {"dpop_en": 1, "preference": "simpo"}})


def test_retention_weights_follow_pair_kind():
    from clo_mlx.losses import retention_weights

    cfg = build_config(overrides={"clo": {"dpop_en": 3, "dpop_tgt": 1, "anchor_en": 2}})
    w = retention_weights(cfg, mx.array([1.0, 0.0, 1.0]))
    assert w["dpop_weight"].tolist() == [3.0, 1.0, 3.0]
    assert w["anchor_weight"].tolist() == [2.0, 0.0, 2.0]
    assert retention_weights(build_config(), mx.array([1.0])) == {}
