"""Named evaluation protocols: one name, one exact computation.

No two papers in few-shot image generation measure alike (FID extractor and resize, sample
counts, the intra-LPIPS member rule), so numbers are comparable only within one protocol. A
protocol fixes every setting an evaluation's numbers depend on; `metrics.protocol = NAME` (or
`--protocol NAME`) applies it, every trajectory records the name and the settings, and figures
and summaries never put two protocols on one axis. The realism scorer is not part of a protocol:
it is trained per target domain (`metrics.realism_classifier`), and recorded beside it.

Provenance of each setting: [C] read in the named file of the authors' code, [S] second-hand
(a paper's text or the project's reference notes), [U] unconfirmed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from adaptscope.registry import Registry

CUSTOM = "custom"  # the settings as the config gives them, matching no registered protocol
LPIPS_MEMBER_RULES = ("random", "first")
LPIPS_SMALL_CLUSTER_RULES = ("drop", "zero")


@dataclass(frozen=True)
class Protocol:
    """The settings of one evaluation protocol (each a `metrics.<name>` setting)."""

    fid_backbone: str  # feature extractor, with its own resize (`build_extractor`)
    fid_n_gen: int  # generated images per FID (and KID, precision/recall) evaluation
    fid_n_real: int  # real images: 0 = the full target set, else at most this many
    lpips_backbone: str
    lpips_n_samples: int  # generated samples clustered around the shots
    lpips_max_per_cluster: int
    lpips_members: str  # "random" (seeded shuffle) or "first" (in latent-seed order)
    lpips_small_clusters: str  # clusters under 2 members: "drop" them or count them as "zero"
    cheap_n_samples: int  # samples of a cheap evaluation (p_t, nearest shot, memorisation)
    description: str = field(default="", compare=False)
    used_by: str = field(default="", compare=False)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def settings(self) -> dict[str, Any]:
        """The `metrics.*` values this protocol fixes."""
        return {k: v for k, v in asdict(self).items() if k in SETTINGS}


SETTINGS: tuple[str, ...] = ("fid_backbone", "fid_n_gen", "fid_n_real", "lpips_backbone",
                             "lpips_n_samples", "lpips_max_per_cluster", "lpips_members",
                             "lpips_small_clusters", "cheap_n_samples")

PROTOCOLS: Registry[Protocol] = Registry(
    "evaluation protocol", f" (metrics.protocol or --protocol; {CUSTOM!r} keeps the settings "
    "as given; `adaptscope protocols` lists them)")

_CDC_LPIPS = {
    "lpips_backbone": "[C] CDC feat_cluster.py:19 lpips.LPIPS(net='vgg'), v0.1 (the lpips "
                      "default), inputs resized to 256 (feat_cluster.py:21)",
    "lpips_n_samples": "[S] CDC/DCL papers: 1,000 generated images clustered around the shots",
    "lpips_max_per_cluster": "[C] CDC feat_cluster.py:26,35 cluster_size = 50",
    "lpips_members": "[C] CDC feat_cluster.py:34 random.shuffle (unseeded there; seeded here)",
    "lpips_small_clusters": "[C] CDC feat_cluster.py:54-59: a cluster with < 2 members has a "
                            "NaN mean and the final average skips NaNs",
}


def _register(name: str, protocol: Protocol) -> Protocol:
    return PROTOCOLS.register(name, protocol)


_register("embedded", Protocol(
    fid_backbone="toy", fid_n_gen=1000, fid_n_real=0, lpips_backbone="toy", lpips_n_samples=1000,
    lpips_max_per_cluster=50, lpips_members="random", lpips_small_clusters="drop",
    cheap_n_samples=50,
    description="the embedded world's toy metric network for FID and LPIPS; 1,000 samples",
    used_by="adaptscope's embedded default (numbers labelled 'toy', comparable with nothing "
            "outside it)",
    sources={"lpips rules": "as dcl-paper", "sample counts": "scaled to two CPU cores"},
))

_register("clean", Protocol(
    fid_backbone="inception", fid_n_gen=5000, fid_n_real=0, lpips_backbone="vgg",
    lpips_n_samples=1000, lpips_max_per_cluster=50, lpips_members="random",
    lpips_small_clusters="drop", cheap_n_samples=200,
    description="clean-fid's Inception (TorchScript, 2015-12-05) with its PIL-bicubic 'clean' "
                "resize; intra-LPIPS as CDC",
    used_by="clean-fid (Parmar et al. 2022); adaptscope's default for image folders",
    sources={"fid_backbone": "[C] clean-fid cleanfid/features.py build_feature_extractor "
                             "mode='clean', cleanfid/resize.py make_resizer('PIL', False, "
                             "'bicubic')",
             **_CDC_LPIPS},
))

_register("dcl-paper", Protocol(
    fid_backbone="pytorch-fid", fid_n_gen=5000, fid_n_real=0, lpips_backbone="vgg",
    lpips_n_samples=1000, lpips_max_per_cluster=50, lpips_members="random",
    lpips_small_clusters="drop", cheap_n_samples=200,
    description="pytorch-fid's TF-ported Inception (bilinear resize to 299 inside the model), "
                "5,000 generated vs the full target set; intra-LPIPS as CDC",
    used_by="CDC (CVPR 2021), DCL (CVPR 2022), MaskDis",
    sources={"fid_backbone": "[C] CDC README.md:87-100 `python -m pytorch_fid real fake` on "
                             "image folders; pytorch-fid 0.3.0 pytorch_fid/inception.py:146-153 "
                             "(bilinear to 299, then 2x - 1 of ToTensor's [0, 1])",
             "fid_n_gen": "[S] CDC/DCL papers: 5,000 generated images",
             "fid_n_real": "[S] the full target set (FFHQ-Babies 2,707; Sunglasses 2,683; "
                           "Sketches 300)",
             **_CDC_LPIPS},
))

_register("adam", Protocol(
    fid_backbone="torchvision-inception", fid_n_gen=5000, fid_n_real=5000,
    lpips_backbone="vgg", lpips_n_samples=1000, lpips_max_per_cluster=50,
    lpips_members="random", lpips_small_clusters="drop", cheap_n_samples=200,
    description="torchvision's ImageNet Inception-v3 pool features with bilinear upsampling, "
                "5,000 generated vs at most 5,000 real; intra-LPIPS as CDC",
    used_by="AdAM (NeurIPS 2022), RICK (CVPR 2023); both keep the best FID over the run "
            "(`best_fid` in the summary)",
    sources={"fid_backbone": "[C] AdAM gan_training/metrics/inception.py:90-96 (bilinear "
                             "upsample to 299, torchvision's transform_input on [-1, 1]), "
                             "38-78 (pool features); generated images as raw generator output, "
                             "gan_training/eval.py:34-51",
             "fid_n_gen": "[S] AdAM/RICK papers: 5,000 generated; adaptscope measures them "
                          "quantised to 8 bits, as every protocol here (AdAM feeds the float "
                          "output)",
             "fid_n_real": "[S] at most 5,000 real (the first in file order here [U]); their "
                           "random flips of the real set are not applied [U]",
             **_CDC_LPIPS},
))

_register("weditgan", Protocol(
    fid_backbone="inception", fid_n_gen=5000, fid_n_real=0, lpips_backbone="vgg",
    lpips_n_samples=1000, lpips_max_per_cluster=50, lpips_members="first",
    lpips_small_clusters="zero", cheap_n_samples=200,
    description="intra-LPIPS over the first 50 members in seed order, an empty or singleton "
                "cluster counted as 0; FID as 'clean'",
    used_by="WeditGAN (AAAI 2024) intra-LPIPS rule; CRDI takes the first 50 too and counts "
            "an empty cluster as 0 (its singleton rule [U])",
    sources={"lpips_members": "[S] WeditGAN: the first 50 members in seed order",
             "lpips_small_clusters": "[S] WeditGAN: an empty or singleton cluster counts as 0",
             "fid_backbone": "[U] WeditGAN's FID presets are not reproduced; clean-fid here"},
))

_register("fd-dinov2", Protocol(
    fid_backbone="dinov2-vit-b14", fid_n_gen=5000, fid_n_real=0, lpips_backbone="vgg",
    lpips_n_samples=1000, lpips_max_per_cluster=50, lpips_members="random",
    lpips_small_clusters="drop", cheap_n_samples=200,
    description="Frechet distance in DINOv2 ViT-B/14 CLS features (FD-DINOv2), KID and "
                "precision/recall in the same space; intra-LPIPS as CDC",
    used_by="Stein et al. (NeurIPS 2023) recommend DINOv2 features over Inception; ViT-B/14 "
            "for tracking, ViT-L/14 for final numbers",
    sources={"fid_backbone": "[C] dgm-eval dgm_eval/models/dinov2.py:46-59 (PIL bicubic "
                             "resize to 224, ImageNet mean/std, CLS token after the final norm)",
             **_CDC_LPIPS},
))


def matching_protocol(settings: dict[str, Any]) -> str:
    """The registered protocol whose settings equal `settings` exactly, else `CUSTOM`."""
    for name, protocol in PROTOCOLS.items():
        if all(settings.get(k) == v for k, v in protocol.settings().items()):
            return name
    return CUSTOM
