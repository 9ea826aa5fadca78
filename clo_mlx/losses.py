"""Losses: CLO (Lee et al., ACL 2025), plain DPO and SFT, with TRL's metric names.

CLO:  L = lam * NLL(y_l | x_l) + (1 - lam) * DPO(all cross-lingual pairs)
DPO:  -log sigmoid(beta * ((pc - rc) - (pr - rr)))      per pair, averaged
where pc/pr are the policy's summed log-probs of the chosen/rejected responses and rc/rr the frozen
reference's. All inputs are per-pair vectors of shape [P].
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

METRIC_NAMES = (
    "loss",
    "loss/dpo",
    "nll/target",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


def dpo_terms(
    policy_chosen_logps: mx.array,  # [P]
    policy_rejected_logps: mx.array,  # [P]
    ref_chosen_logps: mx.array,  # [P]
    ref_rejected_logps: mx.array,  # [P]
    beta: float,
) -> tuple[mx.array, mx.array, mx.array]:
    """(per-pair DPO losses [P], chosen rewards [P], rejected rewards [P])."""
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # [P]
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # [P]
    losses = -nn.log_sigmoid(chosen_rewards - rejected_rewards)  # [P]
    return losses, chosen_rewards, rejected_rewards


def clo_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array,
    ref_rejected_logps: mx.array,
    target_nll: mx.array,
    beta: float = 0.1,
    lam: float = 0.5,
) -> tuple[mx.array, dict[str, mx.array]]:
    """CLO loss and metrics. `target_nll`: mean per-token NLL of the target-language chosen
    responses in the batch (a scalar). With lam=0 this is plain DPO."""
    losses, chosen_rewards, rejected_rewards = dpo_terms(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    dpo = losses.mean()
    loss = lam * target_nll + (1 - lam) * dpo
    metrics = {
        "loss": loss,
        "loss/dpo": dpo,
        "nll/target": target_nll,
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).astype(mx.float32).mean(),
        "logps/chosen": policy_chosen_logps.mean(),
        "logps/rejected": policy_rejected_logps.mean(),
    }
    return loss, metrics


def mean_token_nll(logps: mx.array, ntokens: mx.array, weight: mx.array) -> mx.array:
    """Mean per-token NLL over the sequences with weight 1: -sum(w * logp) / sum(w * n).

    logps, ntokens, weight: [N]. Zero when no sequence is selected.
    """
    total = (weight * ntokens).sum()
    return -(weight * logps).sum() / mx.maximum(total, 1.0)
