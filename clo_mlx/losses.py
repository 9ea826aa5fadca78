"""Losses: CLO (Lee et al., ACL 2025), plain DPO and SFT, with TRL's metric names.

CLO:  L = lam * NLL(y_l | x_l) + (1 - lam) * DPO(all cross-lingual pairs)
NLL:  -sum_{i: w_i = 1} pc_i / sum_{i: w_i = 1} |yc_i|   per response token (`mean_token_nll`)
DPO:  -log sigmoid(beta * ((pc - rc) - (pr - rr)))      per pair, averaged
where pc/pr are the policy's summed log-probs of the chosen/rejected responses, rc/rr the frozen
reference's, |yc| a chosen response's token count and w_i = 1 for the chosen responses the NLL
term covers (`nll_weights`: target-language ones, the paper; `clo.nll_languages: both` adds the
English ones). All inputs are per-pair vectors of shape [P]; `pair_loss` is the whole step.

A batch split into micro-batches (and over the ranks of a data-parallel run) is divided by the
*whole* batch's pair count and NLL-token count (`nll_tokens`), so the parts' losses, gradients
and metrics add up exactly to the batch's.

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

from collections.abc import Sequence
from typing import TYPE_CHECKING

import mlx.core as mx
import mlx.nn as nn
import numpy as np

if TYPE_CHECKING:
    from .config import TrainConfig
    from .tokens import EncodedPair

PREFERENCE_LOSSES = ("sigmoid", "ipo", "hinge", "simpo")
# Pair kinds whose chosen responses a term covers: `clo.nll_languages`, `sft.languages`.
NLL_KINDS = {"target": ("tgt", "pair"), "both": ("en", "tgt", "pair")}
SFT_KINDS = {"target": ("tgt", "pair"), "en": ("en",), "both": ("en", "tgt", "pair")}


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
    sum(w * n) (nll_tokens) when these sequences are one micro-batch of a larger batch.
    """
    total = nll_tokens(ntokens, weight) if total_tokens is None else total_tokens
    return -(weight * logps).sum() / mx.maximum(total, 1.0)


def nll_tokens(ntokens: mx.array, weight: mx.array | None = None) -> mx.array:
    """The NLL term's denominator: response tokens of the sequences with weight 1 (all: None).

    ntokens, weight: [N]."""
    return ntokens.sum() if weight is None else (weight * ntokens).sum()


def kind_weights(kinds: Sequence[str], covered: Sequence[str]) -> np.ndarray:
    """[N] 1.0 where a pair's kind is in `covered`, else 0."""
    return np.array([k in covered for k in kinds], np.float32)


def nll_weights(encoded: Sequence[EncodedPair], nll_languages: str) -> np.ndarray:
    """[N] which chosen responses the CLO NLL term covers: target-language only (the paper), or
    English too (`both`, the paper's ablation)."""
    return kind_weights([e.pair.kind for e in encoded], NLL_KINDS[nll_languages])


def loss_lambda(cfg: TrainConfig) -> float:
    """lam of L for cfg.loss: CLO's `clo.lambda`, DPO's 0 (no NLL), SFT's 1 (NLL only)."""
    return {"clo": cfg.clo["lambda"], "dpo": 0.0, "sft": 1.0}[cfg.loss]


def retention_weights(cfg: TrainConfig, is_en: mx.array) -> dict:
    """clo_loss's per-pair DPOP and anchor weights [P] (module docstring), only for the terms in
    use. is_en: [P] 1 for English-prompt pairs."""
    c, out = cfg.clo, {}
    if c["dpop_en"] or c["dpop_tgt"]:
        out["dpop_weight"] = c["dpop_en"] * is_en + c["dpop_tgt"] * (1 - is_en)
    if c["anchor_en"]:
        out["anchor_weight"] = c["anchor_en"] * is_en
    return out


def pair_loss(
    cfg: TrainConfig,
    logps: mx.array,  # [2P] policy log-probs: chosen responses, then rejected
    ntokens: mx.array,  # [2P] their response token counts
    ref_chosen: mx.array,  # [P]
    ref_rejected: mx.array,  # [P]
    nll_weight: mx.array,  # [P] nll_weights
    is_en: mx.array,  # [P]
    num_pairs: mx.array | int | None = None,
    total_nll_tokens: mx.array | None = None,
) -> tuple[mx.array, dict[str, mx.array]]:
    """L = lam * NLL(y_l | x_l) + (1 - lam) * DPO(all pairs) of P pairs scored in one pass, with
    cfg's lam, beta, preference term and retention terms. For a micro-batch, `num_pairs` and
    `total_nll_tokens` are the whole batch's (module docstring); default: these P pairs'."""
    P = ref_chosen.shape[0]
    chosen, rejected = logps[:P], logps[P:]  # [P], [P]
    chosen_tokens, rejected_tokens = ntokens[:P], ntokens[P:]  # [P], [P]
    nll = mean_token_nll(chosen, chosen_tokens, nll_weight, total_nll_tokens)  # NLL(y_l | x_l)
    return clo_loss(
        chosen,
        rejected,
        ref_chosen,
        ref_rejected,
        nll,
        beta=cfg.clo["beta"],
        lam=loss_lambda(cfg),
        preference=cfg.clo["preference"],
        chosen_tokens=chosen_tokens,
        rejected_tokens=rejected_tokens,
        gamma=cfg.clo["simpo_gamma"],
        num_pairs=num_pairs,
        **retention_weights(cfg, is_en),
    )


def sft_loss(logps: mx.array, total_nll_tokens: mx.array) -> tuple[mx.array, dict[str, mx.array]]:
    """SFT: the mean per-token NLL of the responses. logps: [B] summed response log-probs;
    `total_nll_tokens`: the whole batch's response tokens (nll_tokens of every sequence)."""
    nll = -logps.sum() / total_nll_tokens
    return nll, {"loss": nll, "nll/train": nll}
