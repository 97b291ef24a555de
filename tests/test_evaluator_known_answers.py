"""The evaluator end to end on generators whose answers are known by construction.

Each stand-in "generator" returns chosen real images instead of samples: images drawn from the
full target set, the ten shots themselves, one image repeated. The expected numbers come from
the definitions (FID against the full set, intra-LPIPS around the shots computed pair by pair
with the toy net's own distance), never from the evaluator's helpers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from _fakes import ImagesAsGenerator

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
