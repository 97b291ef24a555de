"""One evaluation of a generator under a run's protocol: FID, p_t, intra-LPIPS, ground truth.

Everything that must not change between evaluations (real statistics, backbones, the fixed
latents and noise maps) is prepared once, so each evaluation only generates and measures. The
latents and noise come from a private generator seeded by the run seed, never from the global
RNG, so evaluating does not perturb training and every method sees the same latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adaptscope.data.domains import TOYFACES_PREFIX, TargetData
from adaptscope.images import from_uint8, to_uint8
from adaptscope.metrics.extractors import build_extractor
from adaptscope.metrics.fid import extract_features, fid_from_features, real_statistics
from adaptscope.metrics.intra_lpips import intra_cluster_lpips
from adaptscope.models import Generator
from adaptscope.train.spec import RunSpec

EVAL_SEED_OFFSET = 1_000_003  # evaluation latents differ from any training draw of the run


@dataclass
class Evaluation:
    """Metric values of one evaluation and the fixed-latent sample grid."""

    metrics: dict[str, Any]
    grid: np.ndarray  # (n_grid, H, W, 3) uint8


class Evaluator:
    """Measures a generator against one target under one protocol."""

    def __init__(self, spec: RunSpec, target: TargetData):
        m = spec.metrics
        self.spec = spec
        self.shots = target.shots
        self.weights_dir = m.weights_dir or None
        self.extractor = build_extractor(m.fid_backbone, self.weights_dir, spec.device)
        self.real_stats = real_statistics(target.full, self.extractor)
        self.lpips_net = self._lpips_net(m.lpips_backbone)
        self.n_samples = max(m.fid_n_gen, m.lpips_n_samples, m.n_grid)
        self.domain = (spec.target.data[len(TOYFACES_PREFIX):]
                       if spec.target.data.startswith(TOYFACES_PREFIX) else None)
        self.realism = self._realism(m.realism)
        self.ground_truth = self._ground_truth() if m.ground_truth else None
        self.protocol = {
            "fid_backbone": self.extractor.name,
            "fid_n_gen": m.fid_n_gen,
            "fid_real_set": f"{target.description}: {target.full.shape[0]} images",
            "lpips_backbone": m.lpips_backbone,
            "lpips_n_samples": m.lpips_n_samples,
            "lpips_max_per_cluster": m.lpips_max_per_cluster,
            "lpips_centres": f"the {target.shots.shape[0]} training shots",
            "realism": m.realism or "none",
            "ground_truth": bool(m.ground_truth),
            "samples": "g_ema, truncation 1, fixed latents and noise per seed, 8-bit quantised",
            "evaluation_iterations": spec.schedule.evaluation_points(),
        }

    def _lpips_net(self, name: str):
        if name == "toy":
            from adaptscope.metrics.toynet import load_toynet

            return load_toynet()
        from adaptscope.metrics.lpips_embed import resolve_lpips_net

        return resolve_lpips_net(name, self.weights_dir)

    def _realism(self, name: str):
        if not name:
            return None
        if name == "toy":
            if self.domain is None:
                raise ValueError("metrics.realism = 'toy' needs a toyfaces target; train a "
                                 "classifier with `adaptscope realism train` for real data")
            from adaptscope.metrics.toynet import load_toynet

            net = load_toynet()
            return lambda x: net.p_target(x, self.domain)
        from adaptscope.metrics.realism import load_realism_classifier

        classifier = load_realism_classifier(name)
        return classifier.p_target

    def _ground_truth(self):
        if self.domain is None:
            raise ValueError("metrics.ground_truth needs a toyfaces target (known attributes)")
        from adaptscope.data import toyfaces
        from adaptscope.metrics.toynet import load_toynet

        spec = self.spec.target
        reference = toyfaces.attributes(self.domain, toyfaces.full_set(self.domain))
        shots = toyfaces.attributes(
            self.domain, toyfaces.few_shot_indices(self.domain, spec.shots, spec.shots_seed))
        columns = [int(c) for c in np.flatnonzero(toyfaces.observable(self.domain))]
        return load_toynet(), reference, shots, columns

    def _latent_batches(self, g: Generator):
        """The run's fixed evaluation latents and noise maps, in batches."""
        rng = torch.Generator().manual_seed(self.spec.seed + EVAL_SEED_OFFSET)
        done = 0
        bs = self.spec.metrics.batch_size
        while done < self.n_samples:
            n = min(bs, self.n_samples - done)
            z = torch.randn(n, g.style_dim, generator=rng)
            yield z, g.make_noise(n, generator=rng)
            done += n

    @torch.no_grad()
    def evaluate(self, g_ema: Generator) -> Evaluation:
        m = self.spec.metrics
        device = torch.device(self.spec.device)
        g_ema.eval()
        feats, kept, p_t, attrs = [], [], [], []
        n_fid = n_kept = 0
        n_keep = max(m.lpips_n_samples, m.n_grid)
        for z, noise in self._latent_batches(g_ema):
            img, _ = g_ema([z.to(device)], noise=noise)
            u8 = to_uint8(img)  # measured as the saved 8-bit images would be
            x = from_uint8(u8)  # CPU: the metric networks are built on the CPU
            if n_fid < m.fid_n_gen:
                take = min(len(u8), m.fid_n_gen - n_fid)
                feats.append(extract_features(u8[:take], self.extractor))
                n_fid += take
            if n_kept < n_keep:
                kept.append(u8)
                n_kept += len(u8)
            if self.realism is not None:
                p_t.append(self.realism(x).float().cpu())
            if self.ground_truth is not None:
                attrs.append(self.ground_truth[0].predict_attributes(x).cpu().numpy())
        samples = np.concatenate(kept)
        result = intra_cluster_lpips(
            from_uint8(samples[: m.lpips_n_samples]), self.shots, self.lpips_net,
            max_per_cluster=m.lpips_max_per_cluster, seed=self.spec.seed,
            weights_dir=self.weights_dir)
        metrics: dict[str, Any] = {
            "fid": fid_from_features(np.concatenate(feats), self.real_stats),
            "fid_backbone": self.extractor.name,
            "fid_n_gen": m.fid_n_gen,
            "realism_pt": float(torch.cat(p_t).mean()) if p_t else math.nan,
            "intra_lpips": result.mean,
            "intra_lpips_std": result.std,
            "lpips_backbone": m.lpips_backbone,
            "nearest_shot_lpips": result.nearest_shot_lpips,
        }
        if self.ground_truth is not None:
            from adaptscope.metrics.groundtruth import (
                attribute_coverage,
                nearest_shot_agreement,
                shot_replication,
            )

            predicted = np.concatenate(attrs)
            _, reference, shots, observable = self.ground_truth
            metrics["gt_coverage"] = attribute_coverage(predicted, reference)
            # Only attributes the target shows can be replicated (sunglasses hide eye size).
            metrics["gt_replication"] = shot_replication(predicted, shots, observable)
            metrics["gt_shot_agreement"] = nearest_shot_agreement(predicted, shots, observable)
        return Evaluation(metrics=metrics, grid=samples[: m.n_grid])
