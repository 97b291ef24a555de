"""The evaluator end to end on generators whose answers are known by construction.

Each stand-in "generator" returns chosen real images instead of samples: images drawn from the
full target set, the ten shots themselves, one image repeated, shots blended with other faces;
a stand-in attribute head gives the ground truth chosen attributes. The expected numbers come
from the definitions (FID against the full set, intra-LPIPS and LPIPS memorisation from the toy
net's own pairwise distance, attribute matches counted by hand), never from the evaluator's
helpers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from _fakes import ImagesAsGenerator

from adaptscope.embedded import toyfaces
from adaptscope.embedded.groundtruth import COVERAGE_ATTRIBUTES
from adaptscope.embedded.toynet import load_toynet
from adaptscope.files import save_torch
from adaptscope.images import from_uint8, to_uint8
from adaptscope.metrics.fid_stats import content_digest
from adaptscope.metrics.realism import FORMAT_TAG, RealismClassifier
from adaptscope.spec import MetricsSpec
from adaptscope.track.evaluate import Evaluator
from adaptscope.track.target import load_target

SIZE = 32
N = 60  # samples per evaluation: every metric sees all of them


@pytest.fixture(scope="module")
def target():
    return load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0)


def settings(**changes) -> MetricsSpec:
    base = dict(fid_backbone="toy", fid_n_gen=N, lpips_backbone="toy", lpips_n_samples=N,
                lpips_max_per_cluster=N, realism="toy", ground_truth=False, n_grid=4,
                batch_size=16)
    return MetricsSpec(**{**base, **changes})


def evaluate(target, pool: torch.Tensor, **changes) -> dict:
    evaluator = Evaluator(settings(**changes), target, seed=0)
    return evaluator.evaluate(ImagesAsGenerator(pool)).metrics


def quantised(x: torch.Tensor) -> torch.Tensor:
    return from_uint8(to_uint8(x))


def intra_lpips_by_definition(samples: torch.Tensor, shots: torch.Tensor) -> float:
    """Nearest shot by LPIPS, mean LPIPS over member pairs per cluster, unweighted mean over
    clusters with two or more members; distances from the toy net's pairwise LPIPS."""
    net = load_toynet()
    with torch.no_grad():
        to_shot = torch.stack([net.lpips_distance(samples, s.expand_as(samples))
                               for s in shots], dim=1)
        nearest = to_shot.argmin(1)
        means = []
        for k in range(len(shots)):
            members = samples[nearest == k]
            if len(members) < 2:
                continue
            pairs = [net.lpips_distance(members[a:a + 1], members[b:b + 1]).item()
                     for a, b in itertools.combinations(range(len(members)), 2)]
            means.append(np.mean(pairs))
    return float(np.mean(means))


def test_fid_reference_is_the_full_target_set_recorded_by_size_and_hash(target):
    evaluator = Evaluator(settings(), target, seed=0)
    protocol = evaluator.protocol
    assert protocol["fid_real_images"] == len(target.full) == 2500
    assert protocol["fid_real_sha256"] == content_digest(target.full)
    assert protocol["fid_real_sha256"] != content_digest(target.shots)
    assert evaluator.real_stats.n_images == 2500


def test_samples_from_the_full_set_score_near_the_fid_noise_floor(target):
    g = torch.Generator().manual_seed(1)
    from_full = target.full[torch.randperm(len(target.full), generator=g)[:N]]
    near_floor = evaluate(target, from_full)["fid"]
    shots_only = evaluate(target, target.shots)["fid"]
    far = evaluate(target, quantised(-target.full[:N]))["fid"]  # colour-inverted: another domain
    # N real images against the full set: only the finite-sample bias remains, far below both a
    # generator that replicates the ten shots and one from another domain.
    assert near_floor < 0.5 * shots_only and near_floor < 0.2 * far


def test_replicating_the_shots_gives_zero_distance_to_the_nearest_shot(target):
    metrics = evaluate(target, target.shots)  # each shot N / 10 times: six per cluster
    assert metrics["nearest_shot_lpips"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["intra_lpips"] == pytest.approx(0.0, abs=1e-6)


def test_one_image_repeated_has_no_diversity(target):
    one = target.full[123:124].expand(5, -1, -1, -1)
    assert evaluate(target, one)["intra_lpips"] == pytest.approx(0.0, abs=1e-6)


def test_intra_lpips_is_clustered_around_the_shots(target):
    g = torch.Generator().manual_seed(2)
    samples = target.full[torch.randperm(len(target.full), generator=g)[:N]]
    measured = evaluate(target, samples)["intra_lpips"]
    expected = intra_lpips_by_definition(quantised(samples), target.shots)
    assert measured == pytest.approx(expected, rel=1e-4)
    around_samples = intra_lpips_by_definition(quantised(samples), quantised(samples[:10]))
    assert not math.isclose(expected, around_samples, rel_tol=1e-3)  # the centres matter


def test_realism_is_the_classifier_mean(target, tmp_path):
    model = RealismClassifier(image_size=SIZE)
    with torch.no_grad():
        model.net.fc.weight.zero_()
        model.net.fc.bias.fill_(math.log(0.25 / 0.75))  # sigmoid -> 0.25 for every image
    save_torch({"format": FORMAT_TAG, "state_dict": model.state_dict(),
                "meta": {"image_size": SIZE}}, tmp_path / "p.pt")
    metrics = evaluate(target, target.full[:N], realism="classifier",
                       realism_classifier=str(tmp_path / "p.pt"))
    assert metrics["realism_pt"] == pytest.approx(0.25, abs=1e-6)
    assert math.isnan(evaluate(target, target.full[:N], realism="none")["realism_pt"])


class KnownAttributes:
    """Stands in for the toy net's attribute head: the next rows of `rows`, whatever the image."""

    def __init__(self, rows: np.ndarray):
        self.rows, self.done = rows, 0

    def predict_attributes(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.as_tensor(self.rows[self.done:self.done + len(x)])
        self.done += len(x)
        return out


def test_ground_truth_replication_reads_what_sunglasses_show_and_coverage_the_full_set(
        target, monkeypatch):
    """Predicted attributes chosen by hand: 20 shots with their (hidden) eye size flipped, the
    10 shots, 30 full-set faces unlike every shot in what sunglasses show. Replication and
    agreement compare the visible attributes only; coverage counts the full set's combinations
    of the coverage attributes."""
    names = list(toyfaces.ATTRIBUTE_NAMES)
    visible = [k for k, name in enumerate(names) if name != "eye_size"]
    eye = names.index("eye_size")
    shots = toyfaces.attributes("sunglasses", target.shot_indices)
    full = toyfaces.attributes("sunglasses", range(len(target.full)))
    flipped = np.concatenate([shots, shots])
    flipped[:, eye] = 1 - flipped[:, eye]  # two levels
    shown = {tuple(row[visible]) for row in shots}
    unlike = np.stack([row for row in full if tuple(row[visible]) not in shown][:30])
    rows = np.concatenate([flipped, shots, unlike])
    assert len(rows) == N

    # FID's real set cut to N images (not read here); coverage still reads the full set
    evaluator = Evaluator(settings(ground_truth=True, fid_n_real=N), target, seed=0)
    monkeypatch.setattr(evaluator.ground_truth, "net", KnownAttributes(rows))
    metrics = evaluator.evaluate(ImagesAsGenerator(target.full[:N])).metrics

    assert metrics["gt_replication"] == pytest.approx(30 / N)  # the flipped and plain shots
    whole = {tuple(row) for row in shots}
    assert np.mean([tuple(row) in whole for row in rows]) != pytest.approx(30 / N)
    agreement = np.mean([max(np.mean(row[visible] == shot[visible]) for shot in shots)
                         for row in rows])
    assert metrics["gt_shot_agreement"] == pytest.approx(agreement)
    assert agreement > 30 / N and np.mean(
        [max(np.mean(row == shot) for shot in shots) for row in rows]) < agreement
    cols = [names.index(a) for a in COVERAGE_ATTRIBUTES]
    reference = {tuple(row[cols]) for row in full}
    found = {tuple(row[cols]) for row in rows}
    assert metrics["gt_coverage"] == pytest.approx(len(found & reference) / len(reference))
    assert len(found & reference) < len(reference)  # against the shots it would be 1


def test_lpips_memorisation_counts_samples_inside_half_the_shots_nearest_gap(target):
    """Shots blended with other faces (from pure copies to mostly the other face) and 30 faces
    of the full set. A sample is memorised when its LPIPS to its nearest shot is below half that
    shot's LPIPS to its nearest other shot; the distances from the toy net's own LPIPS."""
    g = torch.Generator().manual_seed(4)
    others = target.full[torch.randperm(len(target.full), generator=g)[:30]]
    alpha = torch.linspace(0.0, 0.9, 30)[:, None, None, None]
    blends = (1 - alpha) * target.shots[torch.arange(30) % 10] + alpha * others
    samples = quantised(torch.cat([blends, others]))
    net = load_toynet()
    with torch.no_grad():
        to_shot = torch.stack([net.lpips_distance(samples, s.expand_as(samples))
                               for s in target.shots], dim=1).double()
        between = torch.stack([net.lpips_distance(target.shots, s.expand_as(target.shots))
                               for s in target.shots], dim=1).double()
    gap = between.fill_diagonal_(math.inf).min(1).values  # each shot's nearest other shot
    nearest = to_shot.argmin(1)
    ratio = to_shot[torch.arange(N), nearest] / gap[nearest]
    assert ((ratio - 0.5).abs() > 0.01).all()  # none on the line: no rounding can flip one
    expected = float((ratio < 0.5).double().mean())
    assert 0.2 < expected < 0.5 and float((ratio < 1).double().mean()) > expected + 0.1
    # a real set of N images for FID and the other feature metrics, which this does not read
    memorised = evaluate(target, samples, fid_n_real=N)["memorised_lpips"]
    assert memorised == pytest.approx(expected, abs=1e-12)


def _blends_and_others(target):
    """Shots blended with other faces (from copies to mostly the other face), and 30 faces."""
    g = torch.Generator().manual_seed(4)
    others = target.full[torch.randperm(len(target.full), generator=g)[:30]]
    alpha = torch.linspace(0.0, 0.9, 30)[:, None, None, None]
    blends = (1 - alpha) * target.shots[torch.arange(30) % 10] + alpha * others
    return quantised(torch.cat([blends, others]))


def _gu_fraction(to_shot: torch.Tensor) -> float:
    """Gu et al.'s rule written out: nearest over second-nearest distance under 1/3."""
    two = to_shot.double().sort(dim=1).values[:, :2]
    ratio = two[:, 0] / two[:, 1]
    assert ((ratio - 1 / 3).abs() > 1e-3).all()  # none on the line
    return float((ratio < 1 / 3).double().mean())


def test_gu_memorisation_in_lpips_and_features(target):
    """Both columns against the rule computed here from the toy net's LPIPS and from its
    features' Euclidean distances; copies of the shots are all copies."""
    from adaptscope.embedded.backbones import ToyExtractor
    from adaptscope.metrics.fid import extract_features

    samples = _blends_and_others(target)
    net = load_toynet()
    with torch.no_grad():
        to_shot = torch.stack([net.lpips_distance(samples, s.expand_as(samples))
                               for s in target.shots], dim=1)
    ext = ToyExtractor(net)
    f = torch.from_numpy(extract_features(to_uint8(samples), ext)).double()
    s = torch.from_numpy(extract_features(to_uint8(target.shots), ext)).double()
    expected_lpips, expected_features = _gu_fraction(to_shot), _gu_fraction(torch.cdist(f, s))
    assert 0 < expected_lpips < 1 and 0 < expected_features < 1
    metrics = evaluate(target, samples, fid_n_real=N)
    assert metrics["gu_memorised_lpips"] == pytest.approx(expected_lpips, abs=1e-12)
    assert metrics["gu_memorised_features"] == pytest.approx(expected_features, abs=1e-12)
    copies = evaluate(target, target.shots)
    assert copies["gu_memorised_lpips"] == 1.0 and copies["gu_memorised_features"] == 1.0


def test_cmmd_of_the_protocol_is_measured_against_the_fid_real_set(target, tmp_path,
                                                                   monkeypatch):
    """With metrics.cmmd_backbone set, every full evaluation records CMMD between the CLIP
    embeddings of the FID real set and of the samples, both estimators from their sums here."""
    from test_cmmd import FOLDER, by_loops, save_tiny_clip

    from adaptscope.metrics.extractors import CLIPExtractor
    from adaptscope.metrics.fid import extract_features

    monkeypatch.setenv("ADAPTSCOPE_OFFLINE", "1")
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(tmp_path / "cache"))
    save_tiny_clip(tmp_path / FOLDER)
    samples = _blends_and_others(target)
    metrics = evaluate(target, samples, fid_n_real=N, cmmd_backbone="clip-vit-l14-336",
                       weights_dir=str(tmp_path))
    clip = CLIPExtractor(tmp_path)
    real = extract_features(to_uint8(target.full[:N]), clip).astype(np.float64)
    fake = extract_features(to_uint8(samples), clip).astype(np.float64)
    loops = by_loops(real.tolist(), fake.tolist(), 10.0, 1000.0)
    assert metrics["cmmd"] == pytest.approx(loops["biased"], rel=1e-6)
    assert metrics["cmmd_unbiased"] == pytest.approx(loops["unbiased"], rel=1e-6, abs=1e-9)
    assert metrics["cmmd_backbone"] == clip.name
    assert "cmmd" not in evaluate(target, samples, fid_n_real=N)  # off unless asked for
