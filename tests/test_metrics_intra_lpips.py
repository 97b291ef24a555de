"""Intra-cluster LPIPS against a naive one-pair-per-call loop of lpips.LPIPS (random trunks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptscope.metrics.backbones import new_lpips
from adaptscope.metrics.intra_lpips import intra_cluster_lpips, select_members
from adaptscope.metrics.lpips_embed import LPIPSNet

RTOL = 1e-5


def quantized(x: torch.Tensor) -> torch.Tensor:
    return torch.round(((x + 1) * 127.5).clamp(0, 255)) / 127.5 - 1


def make_images(n_centers: int, per_center: int, size: int, seed: int = 0):
    """Smooth centres and noisy copies of them, so nearest centres are unambiguous."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n_centers, 3, 4, 4, generator=g) * 1.6 - 0.8
    centers = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    idx = torch.arange(n_centers).repeat_interleave(per_center)
    noise = 0.25 * torch.randn(len(idx), 3, size, size, generator=g)
    samples = (centers[idx] + noise).clamp(-1, 1)
    perm = torch.randperm(len(idx), generator=g)
    return quantized(samples[perm]), quantized(centers)


def naive_reference(samples, centers, model, max_per_cluster, seed, size=None):
    """The reference algorithm: one LPIPS call per (sample, centre) and per pair."""

    def prep(x):
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
            x = quantized(x)
        return x

    s, c = prep(samples), prep(centers)
    with torch.no_grad():
        dist = np.array([[model(s[i:i + 1], c[k:k + 1]).item() for k in range(len(c))]
                         for i in range(len(s))])
        nearest = dist.argmin(1)
        order = np.random.default_rng(seed).permutation(len(s))  # documented seeded shuffle
        means = np.full(len(c), np.nan)
        for k in range(len(c)):
            members = [i for i in order if nearest[i] == k][:max_per_cluster]
            pairs = [model(s[a:a + 1], s[b:b + 1]).item()
                     for i, a in enumerate(members) for b in members[i + 1:]]
            if pairs:
                means[k] = np.mean(pairs)
    return nearest, dist.min(1), means


@pytest.fixture(scope="module")
def alex():
    torch.manual_seed(0)
    return new_lpips("alex")


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(1)
    return new_lpips("vgg")


def assert_matches(result, reference):
    nearest, nearest_d, means = reference
    np.testing.assert_array_equal(result.nearest_center, nearest)
    np.testing.assert_allclose(result.nearest_distance, nearest_d, rtol=RTOL, atol=1e-9)
    np.testing.assert_allclose(result.cluster_means, means, rtol=RTOL, atol=1e-9)
    valid = means[~np.isnan(means)]
    assert result.mean == pytest.approx(valid.mean(), rel=RTOL)
    assert result.std == pytest.approx(valid.std(ddof=1), rel=1e-4)
    assert result.nearest_shot_lpips == pytest.approx(nearest_d.mean(), rel=RTOL)


@pytest.mark.parametrize(("max_per_cluster", "cache_bytes"), [(50, 2**30), (3, 400_000)])
def test_alex_matches_naive_loop(alex, max_per_cluster, cache_bytes):
    samples, centers = make_images(3, 5, 64)
    # 400 kB holds 3 of the 9 kept members' embeddings (127 kB each): the rest are recomputed.
    result = intra_cluster_lpips(samples, centers, alex, max_per_cluster=max_per_cluster,
                                 seed=7, input_size=None, cache_bytes=cache_bytes, batch_size=4)
    assert_matches(result, naive_reference(samples, centers, alex, max_per_cluster, 7))
    assert result.cluster_sizes.tolist() == [5, 5, 5]
    if max_per_cluster == 3:  # subsampling really happened, and on the seeded subset
        full = intra_cluster_lpips(samples, centers, alex, seed=7, input_size=None)
        assert not np.allclose(full.cluster_means, result.cluster_means)


def test_vgg_matches_naive_loop_without_cached_embeddings(vgg):
    samples, centers = make_images(3, 4, 32, seed=3)
    result = intra_cluster_lpips(samples, centers, vgg, max_per_cluster=3, seed=1,
                                 input_size=None, cache_bytes=0, batch_size=5)
    assert_matches(result, naive_reference(samples, centers, vgg, 3, 1))
    assert result.backbone == "vgg"


def test_resizes_to_lpips_input_size(alex):
    samples, centers = make_images(2, 4, 40, seed=5)
    result = intra_cluster_lpips(samples, centers, alex, seed=2, input_size=64, batch_size=3)
    assert result.input_size == 64
    assert_matches(result, naive_reference(samples, centers, alex, 50, 2, size=64))


def test_default_input_size_is_256_for_lpips_nets(alex):
    samples, centers = make_images(1, 2, 16)
    assert intra_cluster_lpips(samples, centers, alex).input_size == 256


def test_different_sizes_need_an_input_size(alex):
    samples, _ = make_images(1, 3, 32)
    _, centers = make_images(1, 1, 48)
    with pytest.raises(ValueError, match="input_size"):
        intra_cluster_lpips(samples, centers, alex, input_size=None)


class PixelNet(LPIPSNet):
    """An `LPIPSNet` (the toy net's interface) whose features are the pixels (2 scales)."""

    backbone_name = "toy"

    def __init__(self):
        super().__init__()
        self.lpips_weights = [torch.tensor([1.0, 2.0, 0.5]), torch.tensor([1.0, 1.0, 1.0])]
        self.register_buffer("dummy", torch.zeros(1))
        self.eval()

    def lpips_features(self, x):
        # Channel offsets differ, so unit-normalising over channels keeps brightness apart.
        a = torch.tensor([2.0, -1.0, 0.3])[None, :, None, None]
        b = torch.tensor([-2.0, 1.5, 0.7])[None, :, None, None]
        return [x + a, F.avg_pool2d(x, 2) + b]


def pixel_lpips(x, y, net):
    import lpips

    total = 0.0
    for fx, fy, w in zip(net.lpips_features(x), net.lpips_features(y), net.lpips_weights,
                         strict=True):
        d = (lpips.normalize_tensor(fx) - lpips.normalize_tensor(fy)) ** 2
        total += (d * w[None, :, None, None]).sum(1).mean().item()
    return total


def one_big_one_single_one_empty():
    """Three centres: 4 samples near the first, 1 near the second, none near the third."""
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(1, 3, 8, 8)
    centers = quantized(torch.cat([base - 0.5, base + 0.5, base + 0.99]))
    samples = quantized(torch.cat([
        base - 0.5 + 0.2 * torch.randn(4, 3, 8, 8, generator=g),  # cluster 0, 4 members
        base + 0.5 + 0.01 * torch.randn(1, 3, 8, 8, generator=g),  # cluster 1, 1 member
    ]))
    return samples, centers


def test_toy_interface_single_member_and_empty_clusters():
    net = PixelNet()
    samples, centers = one_big_one_single_one_empty()
    result = intra_cluster_lpips(samples, centers, net, seed=0)
    assert result.backbone == "toy" and result.input_size is None
    assert result.cluster_sizes.tolist() == [4, 1, 0]
    assert math.isnan(result.cluster_means[1]) and math.isnan(result.cluster_means[2])
    expected = np.mean([pixel_lpips(samples[a:a + 1], samples[b:b + 1], net)
                        for a in range(4) for b in range(a + 1, 4)])
    assert result.mean == pytest.approx(expected, rel=RTOL)
    assert math.isnan(result.std)  # one qualifying cluster: no spread
    assert result.nearest_distance[4] == pytest.approx(
        pixel_lpips(samples[4:5], centers[1:2], net), rel=RTOL, abs=1e-12)


def test_all_samples_in_one_cluster():
    net = PixelNet()
    g = torch.Generator().manual_seed(1)
    centers = quantized(torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 0.9, -0.9)]))
    samples = quantized(0.1 * torch.randn(6, 3, 8, 8, generator=g))
    result = intra_cluster_lpips(samples, centers, net, max_per_cluster=4, seed=3)
    assert result.cluster_sizes.tolist() == [6, 0, 0]
    chosen = select_members(result.nearest_center, 3, 4, 3)[0]
    expected = np.mean([pixel_lpips(samples[a:a + 1], samples[b:b + 1], net)
                        for i, a in enumerate(chosen) for b in chosen[i + 1:]])
    assert result.mean == pytest.approx(expected, rel=RTOL)


def test_more_centres_than_samples_gives_nan():
    net = PixelNet()
    centers = quantized(torch.stack([torch.full((3, 8, 8), v) for v in (-0.8, 0.0, 0.8)]))
    samples = centers[:2] + 0.0
    result = intra_cluster_lpips(samples, centers, net)
    assert result.cluster_sizes.tolist() == [1, 1, 0]
    assert math.isnan(result.mean) and math.isnan(result.std)
    assert result.nearest_distance == pytest.approx([0.0, 0.0], abs=1e-9)


def test_select_members_is_seeded_subset():
    nearest = np.array([0, 1, 0, 0, 2, 0, 0, 1])
    a = select_members(nearest, 3, 3, seed=4)
    b = select_members(nearest, 3, 3, seed=4)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert len(a[0]) == 3 and set(a[0]) <= {0, 2, 3, 5, 6}
    assert sorted(a[1].tolist()) == [1, 7] and a[2].tolist() == [4]
    assert any(set(select_members(nearest, 3, 3, seed=s)[0]) != set(a[0]) for s in range(10))


def test_negative_weights_are_refused():
    net = PixelNet()
    net.lpips_weights = [torch.tensor([1.0, -1.0, 1.0]), torch.ones(3)]
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="negative"):
        intra_cluster_lpips(x, x[:1], net)


def test_toynet_matches_its_own_pairwise_distance():
    from adaptscope.embedded.toynet import ToyNet

    torch.manual_seed(0)
    net = ToyNet().eval()  # random weights: the interface, not the shipped asset
    samples, centers = make_images(2, 4, 40, seed=9)
    result = intra_cluster_lpips(samples, centers, net, max_per_cluster=3, seed=5)
    assert result.backbone == "toy" and result.input_size is None
    with torch.no_grad():
        dist = torch.stack([net.lpips_distance(samples, c.expand_as(samples)) for c in centers],
                           dim=1).double().numpy()
    np.testing.assert_array_equal(result.nearest_center, dist.argmin(1))
    np.testing.assert_allclose(result.nearest_distance, dist.min(1), rtol=RTOL)
    for k, members in enumerate(select_members(dist.argmin(1), 2, 3, 5)):
        pairs = [net.lpips_distance(samples[a:a + 1], samples[b:b + 1]).item()
                 for i, a in enumerate(members) for b in members[i + 1:]]
        assert result.cluster_means[k] == pytest.approx(np.mean(pairs), rel=RTOL)


def test_clusters_of_different_sizes_count_equally():
    """The score is the unweighted mean of per-cluster means, whatever the cluster sizes."""
    net = PixelNet()
    g = torch.Generator().manual_seed(4)
    base = torch.zeros(1, 3, 8, 8)
    centers = quantized(torch.cat([base - 0.5, base + 0.5]))
    samples = quantized(torch.cat([
        base - 0.5 + 0.05 * torch.randn(2, 3, 8, 8, generator=g),  # cluster 0: 2, close
        base + 0.5 + 0.3 * torch.randn(5, 3, 8, 8, generator=g),  # cluster 1: 5, spread out
    ]))
    result = intra_cluster_lpips(samples, centers, net, seed=0)
    assert result.cluster_sizes.tolist() == [2, 5]
    means = [np.mean([pixel_lpips(samples[a:a + 1], samples[b:b + 1], net)
                      for a in members for b in members if a < b])
             for members in (range(0, 2), range(2, 7))]
    assert result.mean == pytest.approx((means[0] + means[1]) / 2, rel=RTOL)
    assert not math.isclose((2 * means[0] + 5 * means[1]) / 7, result.mean, rel_tol=1e-3)


def test_first_members_in_sample_order():
    """WeditGAN's rule: the first members in sample (latent-seed) order, not a shuffle."""
    net = PixelNet()
    g = torch.Generator().manual_seed(2)
    centers = quantized(torch.stack([torch.full((3, 8, 8), v) for v in (0.0, 0.9)]))
    samples = quantized(0.15 * torch.randn(7, 3, 8, 8, generator=g))  # all nearest centre 0
    result = intra_cluster_lpips(samples, centers, net, max_per_cluster=3, seed=5,
                                 members="first")
    expected = np.mean([pixel_lpips(samples[a:a + 1], samples[b:b + 1], net)
                        for a, b in ((0, 1), (0, 2), (1, 2))])
    assert result.mean == pytest.approx(expected, rel=RTOL)
    shuffled = intra_cluster_lpips(samples, centers, net, max_per_cluster=3, seed=5)
    assert shuffled.mean != pytest.approx(expected, rel=RTOL)  # the seeded shuffle differs


def test_small_clusters_count_as_zero_when_asked():
    net = PixelNet()
    samples, centers = one_big_one_single_one_empty()
    m0 = np.mean([pixel_lpips(samples[a:a + 1], samples[b:b + 1], net)
                  for a in range(4) for b in range(a + 1, 4)])
    result = intra_cluster_lpips(samples, centers, net, seed=0, small_clusters="zero")
    assert result.cluster_means.tolist() == pytest.approx([m0, 0.0, 0.0], rel=RTOL)
    assert result.mean == pytest.approx(m0 / 3, rel=RTOL)
    assert result.std == pytest.approx(np.std([m0, 0.0, 0.0], ddof=1), rel=RTOL)
    with pytest.raises(ValueError, match="small_clusters"):
        intra_cluster_lpips(samples, centers, net, small_clusters="ignore")


def test_distances_to_every_shot_and_between_shots():
    """The memorisation gauge's inputs: each sample's LPIPS to every shot, and the shots' own."""
    net = PixelNet()
    g = torch.Generator().manual_seed(4)
    centers = quantized(torch.stack([torch.full((3, 8, 8), v) for v in (-0.6, 0.1, 0.7)]))
    samples = quantized(0.3 * torch.randn(5, 3, 8, 8, generator=g))
    result = intra_cluster_lpips(samples, centers, net, seed=1)
    to_shot = [[pixel_lpips(samples[i:i + 1], centers[k:k + 1], net) for k in range(3)]
               for i in range(5)]
    between = [[pixel_lpips(centers[a:a + 1], centers[b:b + 1], net) for b in range(3)]
               for a in range(3)]
    np.testing.assert_allclose(result.sample_to_shot, to_shot, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(result.shot_distances, between, rtol=RTOL, atol=1e-12)
    assert result.nearest_center.tolist() == np.argmin(to_shot, axis=1).tolist()
