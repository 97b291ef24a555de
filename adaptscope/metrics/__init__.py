"""Metrics of adaptation: FID against the full target set, intra-cluster LPIPS, the realism
score p_t, KID, PRDC, CMMD, memorisation (two rules), and the backbones and weight files they
need. Metrics take tensors and networks, never runs; the embedded world's toy backbones live in
`adaptscope.embedded`.

Names are imported on first use, so `import adaptscope.metrics` does not pull in clean-fid,
lpips or torchvision.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, str] = {
    # weights and backbones
    "resolve_weights": "weights",
    "WeightsNotFound": "weights",
    "BACKBONES": "weights",
    "build_lpips": "backbones",
    "build_inception": "backbones",
    "new_lpips": "backbones",
    "FeatureExtractor": "extractors",
    "InceptionExtractor": "extractors",
    "FunctionExtractor": "extractors",
    "CLIPExtractor": "extractors",
    # FID
    "FIDStats": "fid_stats",
    "real_statistics": "fid",
    "real_features": "fid",
    "fid_from_images": "fid",
    "fid_from_generator": "fid",
    "fid_from_features": "fid",
    # diversity
    "intra_cluster_lpips": "intra_lpips",
    "IntraLPIPSResult": "intra_lpips",
    "nearest_shots": "intra_lpips",
    "NearestShots": "intra_lpips",
    "LPIPSEmbedder": "lpips_embed",
    "LPIPSNet": "lpips_embed",
    # realism
    "RealismClassifier": "realism",
    "load_realism_classifier": "realism",
    "realism_score": "realism",
    # metrics from feature arrays
    "kid": "feature_metrics",
    "prdc": "feature_metrics",
    "precision_recall": "feature_metrics",
    "memorised_fraction": "feature_metrics",
    "feature_memorisation": "feature_metrics",
    "memorisation": "feature_metrics",
    "Memorisation": "feature_metrics",
    "gu_copies": "feature_metrics",
    "gu_memorised_fraction": "feature_metrics",
    "gu_feature_memorisation": "feature_metrics",
    "cmmd": "cmmd",
    "CMMD": "cmmd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"adaptscope.metrics.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'adaptscope.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
