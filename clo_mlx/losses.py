"""Losses: CLO (Lee et al., ACL 2025), plain DPO and SFT, with TRL's metric names.

CLO:  L = lam * NLL(y_l | x_l) + (1 - lam) * DPO(all cross-lingual pairs)
DPO:  -log sigmoid(beta * ((pc - rc) - (pr - rr)))      per pair, averaged
where pc/pr are the policy's summed log-probs of the chosen/rejected responses and rc/rr the frozen
reference's. All inputs are per-pair vectors of shape [P].

Beyond the paper, the preference term can be swapped (`clo.preference`), with h = (pc - rc) - (pr - rr):
  sigmoid  -log sigmoid(beta * h)                       (DPO, the paper)
  ipo      (h' - 1 / (2 * beta))^2, h' = h of per-token mean log-probs (Azar et al. 2023; as TRL)
  hinge    max(0, 1 - beta * h)                         (SLiC, Zhao et al. 2023)
  simpo    -log sigmoid(beta * (pc/|yc| - pr/|yr|) - gamma)   (reference-free, Meng et al. 2024)

English retention (beyond the paper; both off by default). DPO lowers the chosen log-probs along
with the rejected ones (likelihood displacement), so English answers drift although their margins
grow. Two optional remedies, with k(i) the kind of pair i (`en`: English prompt, `tgt`: target):
  DPOP     h_i <- h_i - mu_k(i) * max(0, rc_i - pc_i)          (Pal et al. 2024, "Smaug"),
           inside the preference term; `clo.dpop_en`, `clo.dpop_tgt` = mu_en, mu_tgt
  anchor   L <- L + alpha * (1/P) * sum_{i: k(i)=en} max(0, (rc_i - pc_i) / |yc_i|)
           a one-sided per-token hinge on the English chosen answers (`clo.anchor_en` = alpha).
           Unlike NLL on English answers (the paper's ablation, `nll_languages: both`), it never
           rewards an English answer for rising above the base model's likelihood, so it does
           not push English answers up (onto target-language prompts too); it only stops the fall.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

PREFERENCE_LOSSES = ("sigmoid", "ipo", "hinge", "simpo")


def dpo_terms(
    policy_chosen_logps: mx.array,  # [P]
    policy_rejected_logps: mx.array,  # [P]
    ref_chosen_logps: mx.array,  # [P]
    ref_rejected_logps: mx.array,  # [P]
    beta: float,
    preference: str = "sigmoid",
    chosen_tokens: mx.array | None = None,  # [P], simpo and ipo
    rejected_tokens: mx.array | None = None,  # [P], simpo and ipo
    gamma: float = 0.5,
) -> tuple[mx.array, mx.array, mx.array]:
    """(per-pair preference losses [P], chosen rewards [P], rejected rewards [P])."""
    if preference == "simpo":
        chosen_rewards = beta * policy_chosen_logps / chosen_tokens  # [P]
        rejected_rewards = beta * policy_rejected_logps / rejected_tokens  # [P]
        return (
            -nn.log_sigmoid(chosen_rewards - rejected_rewards - gamma),
            chosen_rewards,
            rejected_rewards,
        )
    if preference == "ipo":
        # IPO compares length-normalised log-probs (TRL's ipo averages them over the tokens).
        policy_chosen_logps = policy_chosen_logps / chosen_tokens
        ref_chosen_logps = ref_chosen_logps / chosen_tokens
        policy_rejected_logps = policy_rejected_logps / rejected_tokens
        ref_rejected_logps = ref_rejected_logps / rejected_tokens
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # [P]
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # [P]
    margin = chosen_rewards - rejected_rewards  # beta * h
    if preference == "sigmoid":
        losses = -nn.log_sigmoid(margin)
    elif preference == "ipo":
        losses = (margin / beta - 1 / (2 * beta)) ** 2
    elif preference == "hinge":
        losses = nn.relu(1 - margin)
    else:
        raise ValueError(f"preference must be one of {PREFERENCE_LOSSES}, got {preference!r}")
    return losses, chosen_rewards, rejected_rewards


def clo_loss(
    policy_chosen_logps: mx.array,
    policy_rejected_logps: mx.array,
    ref_chosen_logps: mx.array,
    ref_rejected_logps: mx.array,
    target_nll: mx.array,
    beta: float = 0.1,
    lam: float = 0.5,
    preference: str = "sigmoid",
    chosen_tokens: mx.array | None = None,
    rejected_tokens: mx.array | None = None,
    gamma: float = 0.5,
    num_pairs: mx.array | int | None = None,
    dpop_weight: mx.array | None = None,  # [P] mu_k(i), DPOP
    anchor_weight: mx.array | None = None,  # [P] alpha on English pairs, 0 elsewhere
) -> tuple[mx.array, dict[str, mx.array]]:
    """CLO loss and metrics. `target_nll`: mean per-token NLL of the target-language chosen
    responses in the batch (a scalar). With lam=0 this is plain DPO. `loss/dpo` is the mean
    preference term whichever `preference` is used.

    Means are over `num_pairs` pairs (default: the P given). When a batch is split into
    micro-batches, pass the whole batch's pair count (and a `target_nll` over the whole batch's
    token count): the parts' losses, gradients and metrics then add up to the batch's.

    `dpop_weight`, `anchor_weight`: the English-retention terms of the module docstring."""
    drop = nn.relu(ref_chosen_logps - policy_chosen_logps)  # [P] max(0, rc - pc)
    # DPOP as a shifted reference: (pc - (rc + mu*drop)) - (pr - rr) = h - mu*drop.
    shift = 0.0 if dpop_weight is None else dpop_weight * drop
    losses, chosen_rewards, rejected_rewards = dpo_terms(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps + shift,
        ref_rejected_logps,
        beta,
        preference,
        chosen_tokens,
        rejected_tokens,
        gamma,
    )
    if dpop_weight is not None and preference != "simpo":  # reported rewards: TRL's, unpenalised
        chosen_rewards = chosen_rewards + beta * (
            shift / chosen_tokens if preference == "ipo" else shift
        )
    n = losses.shape[0] if num_pairs is None else num_pairs

    def mean(v: mx.array) -> mx.array:  # [P] -> scalar
        return v.sum() / n

    dpo = mean(losses)
    loss = lam * target_nll + (1 - lam) * dpo
    retention = {}
    if anchor_weight is not None:
        anchor = mean(anchor_weight * drop / mx.maximum(chosen_tokens, 1))
        loss = loss + anchor
        retention["loss/anchor_en"] = anchor
    if dpop_weight is not None or anchor_weight is not None:
        retention["logps/chosen_drop"] = mean(drop)
    metrics = {
        "loss": loss,
        "loss/dpo": dpo,
        "nll/target": target_nll,
        "rewards/chosen": mean(chosen_rewards),
        "rewards/rejected": mean(rejected_rewards),
        "rewards/margins": mean(chosen_rewards - rejected_rewards),
        "rewards/accuracies": mean((chosen_rewards > rejected_rewards).astype(mx.float32)),
        "logps/chosen": mean(policy_chosen_logps),
        "logps/rejected": mean(policy_rejected_logps),
        **retention,
    }
    return loss, metrics


def mean_token_nll(
    logps: mx.array,
    ntokens: mx.array,
    weight: mx.array,
    total_tokens: mx.array | float | None = None,
) -> mx.array:
    """Mean per-token NLL over the sequences with weight 1: -sum(w * logp) / sum(w * n).

    logps, ntokens, weight: [N]. Zero when no sequence is selected. `total_tokens` replaces
    sum(w * n) when these sequences are one micro-batch of a larger batch.
    """
    total = (weight * ntokens).sum() if total_tokens is None else total_tokens
    return -(weight * logps).sum() / mx.maximum(total, 1.0)
