"""One evaluation of a generator under a run's protocol: FID, KID, precision/recall/density/
coverage and feature-space memorisation (all from one set of FID features), p_t, intra-LPIPS,
the nearest-shot LPIPS and LPIPS memorisation (from one set of LPIPS distances), ground truth.

Everything that must not change between evaluations (real statistics, backbones, the fixed
latents and noise maps) is prepared once, so each evaluation only generates and measures. The
latents and noise come from a private generator seeded by the run seed, never from the global
RNG, so evaluating does not perturb training and every method sees the same latents.

A cheap evaluation (`evaluate_cheap`) measures only p_t, the nearest-shot LPIPS and LPIPS
memorisation, on the first `metrics.cheap_n_samples` of the same samples, so it can run far more
often.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from adaptscope.embedded import toyfaces
from adaptscope.embedded.groundtruth import (
    attribute_coverage,
    nearest_shot_agreement,
    shot_replication,
)
from adaptscope.embedded.toynet import load_toynet
from adaptscope.errors import ConfigError, DataError
from adaptscope.images import from_uint8, to_uint8
from adaptscope.metrics.cmmd import cmmd
from adaptscope.metrics.feature_metrics import (
    feature_memorisation,
    gu_feature_memorisation,
    gu_memorised_fraction,
    kid,
    memorised_fraction,
    prdc,
    precision_recall,
)
from adaptscope.metrics.fid import (
    extract_features,
    feature_statistics,
    fid_from_features,
    real_features,
)
from adaptscope.metrics.fid_stats import content_digest
from adaptscope.metrics.intra_lpips import intra_cluster_lpips, nearest_shots
from adaptscope.protocols import SETTINGS as PROTOCOL_SETTINGS
from adaptscope.spec import DEFAULT_SAMPLER_STEPS, MetricsSpec
from adaptscope.track.backbones import build_extractor, lpips_net, realism_scorer
from adaptscope.track.schema import CHEAP_METRICS
from adaptscope.track.target import TargetData

EVAL_SEED_OFFSET = 1_000_003  # evaluation latents differ from any training draw of the run
KID_SUBSETS = 100  # torch-fidelity's default
KID_MAX_SUBSET = 1000  # torch-fidelity's default subset size, lowered to fit small sets
PR_K = 3  # precision/recall: Kynkaanniemi et al. 2019
DC_K = 5  # density/coverage: Naeem et al. 2020
MEMORISED_RATIO = 0.5  # see adaptscope.metrics.feature_metrics.memorisation


def set_size_problems(metrics: MetricsSpec, n_full: int, n_shots: int) -> list[str]:
    """Every metric of a full evaluation that the set sizes cannot give, with what it needs and
    how to get there: the smallest real and generated sets each metric is defined on."""
    n_real = n_full if metrics.fid_n_real == 0 else min(n_full, metrics.fid_n_real)
    n_gen = metrics.fid_n_gen
    pr_k, dc_k = (PR_K, DC_K) if metrics.prdc_k is None else (metrics.prdc_k, metrics.prdc_k)
    where = (f"the real set holds {n_real} image(s) (target.data"
             + (f", cut to metrics.fid_n_real = {metrics.fid_n_real}" if metrics.fid_n_real
                else "") + f") and {n_gen} are generated (metrics.fid_n_gen)")
    needs = (  # (metric, real images, generated images)
        ("FID (a covariance of the features)", 2, 2),
        ("KID (subsets of at least 2 images of each set)", 2, 2),
        (f"precision and recall (k = {pr_k} nearest neighbours)", pr_k + 1, pr_k + 1),
        (f"density and coverage (k = {dc_k} nearest neighbours)", dc_k + 1, dc_k + 1),
    )
    failing = [
        f"{name} needs at least {real} real and {gen} generated images, but {where}: give a "
        f"target set of at least {real} images (or set metrics.fid_n_real = 0 to use all of "
        f"it) and metrics.fid_n_gen >= {gen}"
        for name, real, gen in needs if n_real < real or n_gen < gen]
    problems = failing[-1:]  # the largest need: meeting it meets the others
    if n_shots < 2:
        problems.append(
            f"memorisation needs at least 2 shots (its threshold is each shot's distance to its "
            f"nearest other shot), but target.shots = {n_shots}: set target.shots >= 2")
    return problems


class Sampled(Protocol):
    """What the evaluator samples, whatever the generator family: fixed inputs per seed (a
    GAN's latents and noise maps; a diffusion model's initial noise), cut like a sequence, and
    the images one batch of them gives (a GAN's forward; a diffusion model's deterministic
    sampler). So sample k at iteration t is comparable across methods and iterations."""

    family: str

    def eval(self) -> Any: ...

    def fixed_batches(self, seed: int, total: int, batch_size: int) -> Iterator[Any]: ...

    def generate(self, inputs: Any) -> torch.Tensor: ...


@dataclass
class Evaluation:
    """Metric values of one evaluation and the fixed-latent sample grid."""

    metrics: dict[str, Any]
    grid: np.ndarray  # (n_grid, H, W, 3) uint8


class Evaluator:
    """Measures a generator against one target under one protocol (`metrics`), with the fixed
    latents of `seed`."""

    def __init__(self, metrics: MetricsSpec, target: TargetData, seed: int, device: str = "cpu",
                 family: str = "gan"):
        m = metrics
        self.metrics = m
        self.seed = seed
        self.device = torch.device(device)
        self.shots = target.shots
        self.weights_dir = m.weights_dir or None
        # Built in this order on purpose: building a network draws its random initial weights
        # from the global RNG, and training continues from that RNG state.
        self.extractor = build_extractor(m.fid_backbone, self.weights_dir, device)
        problems = set_size_problems(m, len(target.full), len(target.shots))
        if problems:
            raise DataError(f"{target.description}: " + "; ".join(problems))
        real = target.full if m.fid_n_real == 0 else target.full[: m.fid_n_real]
        self.real_feats = real_features(real, self.extractor)
        self.real_stats = feature_statistics(self.real_feats)
        # The held-out split that selects iterations (`fid_selection`), when the target has one.
        self.selection_stats = None if target.validation is None else feature_statistics(
            real_features(target.validation, self.extractor))
        self.shot_feats = real_features(target.shots, self.extractor, cache=False)
        # CMMD's CLIP embedding of the same real images, where the protocol measures it
        self.clip = None if m.cmmd_backbone is None else build_extractor(
            m.cmmd_backbone, self.weights_dir, device)
        self.real_clip = None if self.clip is None else real_features(real, self.clip)
        self.kid_subset = min(KID_MAX_SUBSET, len(self.real_feats), m.fid_n_gen)
        self.lpips_net = lpips_net(m.lpips_backbone, self.weights_dir)
        self.n_samples = max(m.fid_n_gen, m.lpips_n_samples, m.n_grid)
        # A cheap evaluation's samples are the first of the full evaluation's, so never more.
        self.cheap_n_samples = min(m.cheap_n_samples, self.n_samples)
        self.realism = realism_scorer(m.realism, m.realism_classifier, target.domain)
        steps = m.sampler_steps or DEFAULT_SAMPLER_STEPS
        precision = m.sampler_precision or "float32"
        noise = m.sampler_noise or "model"
        self.ground_truth = _GroundTruth(target) if m.ground_truth else None
        self.protocol = {
            "protocol": m.protocol,
            "protocol_settings": {k: getattr(m, k) for k in PROTOCOL_SETTINGS},
            "fid_backbone": self.extractor.name,
            "fid_n_gen": m.fid_n_gen,
            "fid_real_set": f"{target.description}: {len(real)} of {len(target.full)} images",
            "fid_real_images": len(real),
            "fid_real_sha256": content_digest(real),
            **({} if target.validation is None else {
                "fid_selection_images": len(target.validation),
                "fid_selection_sha256": content_digest(target.validation)}),
            "kid": f"unbiased MMD^2, cubic polynomial kernel, {KID_SUBSETS} subsets of "
                   f"{self.kid_subset} (mean, std)",
            **({"precision_recall": f"Kynkaanniemi et al. 2019, k = {PR_K}",
                "density_coverage": f"Naeem et al. 2020, k = {DC_K}"} if m.prdc_k is None else {
                "precision_recall": f"the prdc package's, k = {m.prdc_k} (strict <)",
                "density_coverage": f"Naeem et al. 2020, k = {m.prdc_k}"}),
            **({} if self.clip is None else {
                "cmmd": f"CMMD (Jayasumana et al. 2024): {self.clip.name}, unit-normalised, "
                        "Gaussian kernel sigma 10, x1000; biased (the reference's) and "
                        "unbiased, against the FID real set"}),
            "memorisation_gu": "Gu et al. 2023: fraction of samples whose distance to the "
                               "nearest shot is under 1/3 of that to the second nearest (FID "
                               "features; LPIPS)",
            "memorisation": f"fraction of samples nearer their nearest shot than {MEMORISED_RATIO}"
                            " x that shot's distance to its nearest other shot (FID features; "
                            "LPIPS)",
            "lpips_backbone": m.lpips_backbone,
            "lpips_n_samples": m.lpips_n_samples,
            "lpips_max_per_cluster": m.lpips_max_per_cluster,
            "lpips_members": m.lpips_members,
            "lpips_small_clusters": m.lpips_small_clusters,
            "lpips_centres": f"the {target.shots.shape[0]} training shots",
            "realism": m.realism_classifier if m.realism == "classifier" else m.realism,
            "ground_truth": bool(m.ground_truth),
            "samples": (
                f"the adapted denoiser, deterministic DDIM (eta 0) of {steps} steps "
                f"({precision}; the {noise} noise) from fixed initial noise per seed, clipped, "
                "8-bit quantised"
                if family == "diffusion" else
                "g_ema, truncation 1, fixed latents and noise per seed, 8-bit quantised"),
            **({"sampler": "ddim", "sampler_steps": steps, "sampler_precision": precision,
                "sampler_noise": noise}
               if family == "diffusion" else {}),
        }

    @property
    def cheap_protocol(self) -> dict[str, Any]:
        """What a cheap evaluation measures, and on how many of the fixed samples."""
        return {"cheap_metrics": list(CHEAP_METRICS), "cheap_n_samples": self.cheap_n_samples,
                "cheap_samples": f"the first {self.cheap_n_samples} of the fixed latents"}

    def _generated(self, g_ema: Sampled, n: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """The first `n` samples of the fixed inputs, batch by batch: 8-bit images and the
        [-1, 1] tensors (on the CPU, where the metric networks are) measured from them.

        The inputs are drawn in the full evaluation's batches (a stream depends on its batch
        sizes), the last one cut to `n` before it is generated, so a cheap evaluation generates
        exactly the full evaluation's first samples, and no more.
        """
        done = 0
        for inputs in g_ema.fixed_batches(self.seed + EVAL_SEED_OFFSET, self.n_samples,
                                          self.metrics.batch_size):
            if done >= n:
                return
            if done + len(inputs) > n:
                inputs = inputs[: n - done]
            u8 = to_uint8(g_ema.generate(inputs))  # measured as the saved 8-bit images would be
            yield u8, from_uint8(u8)
            done += len(u8)

    @torch.no_grad()
    def evaluate(self, g_ema: Sampled) -> Evaluation:
        m = self.metrics
        g_ema.eval()
        feats, clip_feats, kept, p_t, attrs = [], [], [], [], []
        n_fid = n_kept = 0
        n_keep = max(m.lpips_n_samples, m.n_grid)
        for u8, x in self._generated(g_ema, self.n_samples):
            if n_fid < m.fid_n_gen:
                take = min(len(u8), m.fid_n_gen - n_fid)
                feats.append(extract_features(u8[:take], self.extractor))
                if self.clip is not None:
                    clip_feats.append(extract_features(u8[:take], self.clip))
                n_fid += take
            if n_kept < n_keep:
                kept.append(u8)
                n_kept += len(u8)
            if self.realism is not None:
                p_t.append(self.realism.p_target(x).float().cpu())
            if self.ground_truth is not None:
                attrs.append(self.ground_truth.net.predict_attributes(x).cpu().numpy())
        samples = np.concatenate(kept)
        result = intra_cluster_lpips(
            from_uint8(samples[: m.lpips_n_samples]), self.shots, self.lpips_net,
            max_per_cluster=m.lpips_max_per_cluster, seed=self.seed, members=m.lpips_members,
            small_clusters=m.lpips_small_clusters)
        metrics: dict[str, Any] = {
            "protocol": m.protocol,
            **self._feature_metrics(np.concatenate(feats)),
            **({} if self.clip is None else self._cmmd(np.concatenate(clip_feats))),
            "realism_pt": float(torch.cat(p_t).mean()) if p_t else math.nan,
            "intra_lpips": result.mean,
            "intra_lpips_std": result.std,
            "lpips_backbone": m.lpips_backbone,
            "nearest_shot_lpips": result.nearest_shot_lpips,
            "memorised_lpips": memorised_fraction(result.sample_to_shot, result.shot_distances,
                                                  ratio=MEMORISED_RATIO),
            "gu_memorised_lpips": gu_memorised_fraction(result.sample_to_shot),
        }
        if self.ground_truth is not None:
            metrics.update(self.ground_truth.measure(np.concatenate(attrs)))
        return Evaluation(metrics=metrics, grid=samples[: m.n_grid])

    def _feature_metrics(self, fake: np.ndarray) -> dict[str, Any]:
        """Every metric of the generated samples' FID features: no extra network pass."""
        real = self.real_feats
        kid_mean, kid_std = kid(real, fake, subset_size=self.kid_subset, subsets=KID_SUBSETS,
                                seed=self.seed)
        if self.metrics.prdc_k is None:
            precision, recall = precision_recall(real, fake, k=PR_K)
            dc = prdc(real, fake, k=DC_K)
        else:  # all four from one prdc call at one k, as the unidad protocol's references
            dc = prdc(real, fake, k=self.metrics.prdc_k)
            precision, recall = dc["precision"], dc["recall"]
        return {
            "fid": fid_from_features(fake, self.real_stats),
            **({} if self.selection_stats is None else {
                "fid_selection": fid_from_features(fake, self.selection_stats)}),
            "fid_backbone": self.extractor.name,
            "fid_n_gen": self.metrics.fid_n_gen,
            "kid": kid_mean,
            "kid_std": kid_std,
            "precision": precision,
            "recall": recall,
            "density": dc["density"],
            "coverage": dc["coverage"],
            "memorised_features": feature_memorisation(fake, self.shot_feats,
                                                       ratio=MEMORISED_RATIO),
            "gu_memorised_features": gu_feature_memorisation(fake, self.shot_feats),
        }

    def _cmmd(self, fake: np.ndarray) -> dict[str, Any]:
        value = cmmd(self.real_clip, fake)
        return {"cmmd": value.biased, "cmmd_unbiased": value.unbiased,
                "cmmd_backbone": self.clip.name}

    @torch.no_grad()
    def evaluate_cheap(self, g_ema: Sampled) -> dict[str, Any]:
        """p_t and the nearest-shot LPIPS on the first `cheap_n_samples` fixed samples, measured
        as `evaluate` measures them (the same scorer, nearest-shot code and seed)."""
        g_ema.eval()
        kept, p_t = [], []
        for u8, x in self._generated(g_ema, self.cheap_n_samples):
            kept.append(u8)
            if self.realism is not None:
                p_t.append(self.realism.p_target(x).float().cpu())
        nearest = nearest_shots(from_uint8(np.concatenate(kept)), self.shots, self.lpips_net,
                                seed=self.seed)
        return {
            "protocol": self.metrics.protocol,
            "realism_pt": float(torch.cat(p_t).mean()) if p_t else math.nan,
            # the instrument of nearest_shot_lpips, so cheap and full values share a panel
            "lpips_backbone": self.metrics.lpips_backbone,
            "nearest_shot_lpips": nearest.nearest_shot_lpips,
            "memorised_lpips": memorised_fraction(nearest.sample_to_shot, nearest.shot_distances,
                                                  ratio=MEMORISED_RATIO),
            "gu_memorised_lpips": gu_memorised_fraction(nearest.sample_to_shot),
        }


class _GroundTruth:
    """The embedded world's attribute measures: the target's attributes are known exactly."""

    def __init__(self, target: TargetData):
        if target.domain is None:
            raise ConfigError("metrics.ground_truth needs a toyfaces target (known attributes); "
                              "set metrics.ground_truth = false for an image folder")
        domain = target.domain
        self.net = load_toynet()
        self.reference = toyfaces.attributes(domain, toyfaces.full_set(domain))
        self.shots = toyfaces.attributes(domain, target.shot_indices)
        self.observable = [int(c) for c in np.flatnonzero(toyfaces.observable(domain))]

    def measure(self, predicted: np.ndarray) -> dict[str, float]:
        return {
            "gt_coverage": attribute_coverage(predicted, self.reference),
            # Only attributes the target shows can be replicated (sunglasses hide eye size).
            "gt_replication": shot_replication(predicted, self.shots, self.observable),
            "gt_shot_agreement": nearest_shot_agreement(predicted, self.shots, self.observable),
        }
