"""Feature-space losses of CDC and DCL, as pure functions of feature tensors (unit-testable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_cosine(features: torch.Tensor) -> torch.Tensor:
    """(B, ...) features -> (B, B-1) cosine similarity of each sample to every other sample."""
    flat = F.normalize(features.reshape(features.shape[0], -1), dim=1)
    sim = flat @ flat.t()
    b = sim.shape[0]
    off_diagonal = ~torch.eye(b, dtype=torch.bool, device=sim.device)
    return sim[off_diagonal].view(b, b - 1)


def distance_consistency_loss(
    source_layers: list[torch.Tensor],
    target_layers: list[torch.Tensor],
    layer_per_anchor: list[int],
) -> torch.Tensor:
    """CDC's cross-domain distance consistency, KL(p_source || p_target) averaged over entries.

    `source_layers[l]` and `target_layers[l]` are the (B, C, H, W) features of the same B
    latents at generator layer l. Anchor i is compared at layer `layer_per_anchor[i]`: the
    softmax (no temperature) of its cosine similarities to the other B-1 samples is taken in
    the source and in the target generator, and the KL divergence is averaged over the B*(B-1)
    entries (KLDivLoss with reduction 'mean', as in CDC's code).
    """
    p_src, log_p_tgt = [], []
    for i, layer in enumerate(layer_per_anchor):
        p_src.append(F.softmax(pairwise_cosine(source_layers[layer])[i], dim=0))
        log_p_tgt.append(F.log_softmax(pairwise_cosine(target_layers[layer])[i], dim=0))
    p, log_q = torch.stack(p_src), torch.stack(log_p_tgt)
    return (p * (p.clamp_min(1e-30).log() - log_q)).mean()


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    tau: float,
    exclude_own_negative: bool,
) -> torch.Tensor:
    """Mean InfoNCE with cosine similarity and temperature `tau`.

    anchors, positives: (B, ...); negatives: (M, ...). With `exclude_own_negative` (the
    generator term, where negatives are the other samples' source features) negative j = i is
    dropped for anchor i. Loss_i = -log(e^{s(a_i,p_i)/tau} / (e^{s(a_i,p_i)/tau} +
    sum_j e^{s(a_i,n_j)/tau})).
    """
    a = F.normalize(anchors.reshape(anchors.shape[0], -1), dim=1)
    p = F.normalize(positives.reshape(positives.shape[0], -1), dim=1)
    n = F.normalize(negatives.reshape(negatives.shape[0], -1), dim=1)
    pos = (a * p).sum(1, keepdim=True) / tau  # (B, 1)
    neg = a @ n.t() / tau  # (B, M)
    if exclude_own_negative:
        neg = neg.masked_fill(torch.eye(*neg.shape, dtype=torch.bool, device=neg.device),
                              float("-inf"))
    logits = torch.cat([pos, neg], 1)
    return -F.log_softmax(logits, dim=1)[:, 0].mean()
