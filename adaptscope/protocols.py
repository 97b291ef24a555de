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
    # CMMD's CLIP extractor (a `build_extractor` name); None: no CMMD
    cmmd_backbone: str | None = None
    # None: precision/recall at k = 3 (Kynkaanniemi, `<=`) and density/coverage at k = 5;
    # k: all four from `prdc` at this k (strict `<`), as the prdc package computes them
    prdc_k: int | None = None
    description: str = field(default="", compare=False)
    used_by: str = field(default="", compare=False)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def settings(self) -> dict[str, Any]:
        """The `metrics.*` values this protocol fixes."""
        return {k: v for k, v in asdict(self).items() if k in SETTINGS}


SETTINGS: tuple[str, ...] = ("fid_backbone", "fid_n_gen", "fid_n_real", "lpips_backbone",
                             "lpips_n_samples", "lpips_max_per_cluster", "lpips_members",
                             "lpips_small_clusters", "cheap_n_samples", "cmmd_backbone",
                             "prdc_k")
CMMD_CLIP = "clip-vit-l14-336"  # the CLIP extractor of CMMD (`CLIPExtractor`)

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

_CRDI = "CRDI (github.com/YuCao16/CRDI @ 6fb0cd5)"
_UNIDAD = "Uni-DAD (github.com/yaramohamadi/uni-DAD @ 7d56f42, 1_FSIG/)"
_UNIDAD_EVAL = "Uni-DAD main/dhariwal/evaluation_util.py"
_UNIDAD_TEST = "Uni-DAD main/dhariwal/test_dhariwal.py"

_register("unidad", Protocol(
    fid_backbone="pytorch-fid", fid_n_gen=5000, fid_n_real=5000, lpips_backbone="vgg",
    lpips_n_samples=5000, lpips_max_per_cluster=50, lpips_members="first",
    lpips_small_clusters="zero", cheap_n_samples=200, cmmd_backbone=CMMD_CLIP, prdc_k=5,
    description="the evaluator of CRDI and Uni-DAD: pytorch-fid's Inception, 5,000 generated vs "
                "at most 5,000 real; intra-LPIPS over all 5,000 samples, the first 50 members "
                "of each cluster, a cluster under 2 members counted as 0; precision, recall, "
                "density and coverage all from prdc at k = 5; plus CMMD (CLIP ViT-L/14-336, "
                "biased and unbiased)",
    used_by="CRDI (ECCV 2024), Uni-DAD (CVPR 2026); Uni-DAD keeps the checkpoint of best "
            "FID over training (test_dhariwal.py:23; `best_fid` in the summary)",
    sources={
        "fid_backbone": f"[C] {_CRDI} src/fs_gradients/fid_score.py:18,224 and {_UNIDAD_EVAL}"
                        ":87,293 load pytorch-fid's FID weights into pytorch-fid's InceptionV3 "
                        "(bilinear to 299, then 2x - 1: fid_score.py:154-160, "
                        "evaluation_util.py:223-229)",
        "fid_n_gen": f"[C] {_UNIDAD_TEST}:597 --total_eval_samples 5000 (experiments/"
                     f"defaults.sh:75, README.md:316); {_CRDI} main.sh:10 --num_evaluate 5000",
        "fid_n_real": f"[C] {_UNIDAD_EVAL}:583-584 compute_statistics_of_path(max_images=5000) "
                      "reads the first 5,000 images of the target folder in sorted file order "
                      "(:440-448), as adaptscope takes the first metrics.fid_n_real; [U] CRDI's "
                      "real statistics come from a precomputed npz not in its repository",
        "lpips_backbone": f"[C] {_CRDI} src/fs_gradients/evaluation.py:24 and {_UNIDAD_EVAL}"
                          ":742 lpips.LPIPS(net='vgg') v0.1; the shots resized to 256 "
                          "(evaluation.py:26-31, evaluation_util.py:744-749)",
        "lpips_n_samples": "[C] 5,000 generated images clustered: every generated sample, "
                           f"{_CRDI} scripts/fs_gradient_evaluate.py:208-217 with "
                           f"evaluation.py:41-42, {_UNIDAD_TEST}:754,768 with "
                           "evaluation_util.py:759-760",
        "lpips_max_per_cluster": f"[C] {_CRDI} evaluation.py:58 keeps the first 50 members "
                                 "(main.sh:10 and logs/evaluate.log run --lpips_cluster_size "
                                 "50); [C] Uni-DAD's shipped default is 100 (experiments/"
                                 "defaults.sh:76, test_dhariwal.py:609), and its README's test "
                                 "command keeps it; [U] which one Uni-DAD's paper used",
        "lpips_members": f"[C] the first members in sample order: {_CRDI} evaluation.py:58, "
                         f"{_UNIDAD_EVAL}:776 (cluster[c][:cluster_size], no shuffle)",
        "lpips_small_clusters": f"[C] an empty or singleton cluster counts as 0: {_CRDI} "
                                f"evaluation.py:76-80, {_UNIDAD_EVAL}:794-798 (no pair: 0)",
        "prdc_k": f"[C] {_UNIDAD_TEST}:770 calc_precision_recall(nearest_k=5) -> prdc's "
                  f"compute_prdc ({_UNIDAD_EVAL}:808-852, 909-949: radius = k-th nearest "
                  "other point, strict <), real features from the FID npz (:721-729); Uni-DAD "
                  "reports precision and recall only, and only in its --eval_best_once path "
                  "(the streaming path sets precision 0, test_dhariwal.py:912-915); CRDI "
                  "computes none",
        "cheap_n_samples": "adaptscope's own, as in the other protocols: neither reference "
                           "measures between full evaluations",
        "cmmd_backbone": "[C] google-research cmmd (embedding.py: CLIP ViT-L/14 at 336 px, "
                         "unit-normalised; distance.py:25,28: sigma 10, x 1000); [U] neither "
                         "CRDI nor Uni-DAD computes CMMD: adaptscope adds it to this protocol",
        "departures": "[C] the reference codes give LPIPS the generated images in [0, 1] "
                      "(CRDI fs_gradient_evaluate.py:150-151, Uni-DAD test_dhariwal.py:754) "
                      "but the shots in [-1, 1] (evaluation.py:46-47, evaluation_util.py:"
                      "764-765), while lpips expects [-1, 1]: adaptscope gives both in "
                      "[-1, 1]. Uni-DAD quantises by truncation (test_dhariwal.py:357), "
                      "CRDI not at all; adaptscope rounds to 8 bits",
    },
))


def matching_protocol(settings: dict[str, Any]) -> str:
    """The registered protocol whose settings equal `settings` exactly, else `CUSTOM`."""
    for name, protocol in PROTOCOLS.items():
        if all(settings.get(k) == v for k, v in protocol.settings().items()):
            return name
    return CUSTOM
