"""Evaluation protocols: the registry, how a config's protocol is applied, the command line, and
the evaluator's protocol-bound metrics (KID, precision/recall, density/coverage, memorisation)
checked against the reference packages on features extracted here, independently."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace

import numpy as np
import prdc as prdc_reference
import pyarrow.parquet as pq
import pytest
import torch
from _fakes import ImagesAsGenerator
from _tiny_world import CH, tiny_spec
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_full
from typer.testing import CliRunner

from adaptscope import load_trajectories
from adaptscope.cli import app
from adaptscope.errors import AdaptscopeError
from adaptscope.images import from_uint8, to_uint8
from adaptscope.metrics.fid import extract_features
from adaptscope.models import FixedLatents, Generator
from adaptscope.protocols import PROTOCOLS, SETTINGS
from adaptscope.spec import (
    MetricsSpec,
    ScheduleSpec,
    apply_protocol,
    protocol_departures,
    spec_from_dict,
)
from adaptscope.track.backbones import build_extractor
from adaptscope.track.evaluate import EVAL_SEED_OFFSET, Evaluator
from adaptscope.track.target import load_target
from adaptscope.train.experiment import load_experiment
from adaptscope.train.loop import run_adaptation

NAMES = ("embedded", "clean", "dcl-paper", "adam", "weditgan", "fd-dinov2", "unidad")
EMBEDDED = {"fid_backbone": "toy", "fid_n_gen": 1000, "fid_n_real": 0, "lpips_backbone": "toy",
            "lpips_n_samples": 1000, "lpips_max_per_cluster": 50, "lpips_members": "random",
            "lpips_small_clusters": "drop", "cheap_n_samples": 50}
NEW_COLUMNS = ("protocol", "kid", "kid_std", "precision", "recall", "density", "coverage",
               "memorised_features", "memorised_lpips")
runner = CliRunner()


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- the registry ------------------------------------------------------------------------------


def test_the_six_protocols_are_registered_and_each_makes_a_valid_metrics_spec():
    assert set(NAMES) <= set(PROTOCOLS.names())
    assert set(SETTINGS) <= {f.name for f in fields(MetricsSpec)}
    for name, protocol in PROTOCOLS.items():
        applied = apply_protocol(MetricsSpec(protocol=name))
        assert applied.protocol == name
        for key in SETTINGS:
            assert getattr(applied, key) == getattr(protocol, key), (name, key)
        # The settings alone, unnamed, are recognised as this protocol and no other: two
        # protocols with the same settings would make the recorded name ambiguous.
        unnamed = MetricsSpec(**{k: getattr(protocol, k) for k in SETTINGS})
        assert apply_protocol(unnamed).protocol == name


@pytest.mark.parametrize("make", [
    lambda: MetricsSpec(protocol="nope"),
    lambda: load_experiment(None, ["metrics.protocol=nope"]),
], ids=["MetricsSpec", "load_experiment"])
def test_an_unknown_protocol_fails_listing_the_registered_names(make):
    with pytest.raises(AdaptscopeError) as info:
        make()
    text = str(info.value)
    assert "'nope'" in text
    for name in NAMES:
        assert name in text


# --- the LPIPS settings agree with the sources they cite ---------------------------------------

LPIPS_SETTINGS = ("lpips_backbone", "lpips_n_samples", "lpips_max_per_cluster", "lpips_members",
                  "lpips_small_clusters")
# What a provenance text says, read off its own words: (pattern, setting, value or a function of
# the match). A number or a name in the text is taken from the text, never from the protocol.
CLAIMS = (
    (r"net='(\w+)'", "lpips_backbone", lambda m: m.group(1)),
    (r"(\d[\d,]*) generated images clustered", "lpips_n_samples",
     lambda m: int(m.group(1).replace(",", ""))),
    (r"cluster_size = (\d+)", "lpips_max_per_cluster", lambda m: int(m.group(1))),
    (r"the first (\d+) members", "lpips_max_per_cluster", lambda m: int(m.group(1))),
    (r"the first \d+ members", "lpips_members", lambda m: "first"),
    (r"random\.shuffle", "lpips_members", lambda m: "random"),
    (r"NaN mean and the final average skips NaNs", "lpips_small_clusters", lambda m: "drop"),
    (r"empty or singleton cluster counts as 0", "lpips_small_clusters", lambda m: "zero"),
)
# Settings no outside source states: the embedded world's own toy network and sample count, and
# WeditGAN's backbone and sample count (its sources name only its member rules).
UNCITED = {("embedded", "lpips_backbone"), ("embedded", "lpips_n_samples"),
           ("weditgan", "lpips_backbone"), ("weditgan", "lpips_n_samples")}


LPIPS_RULES = ("lpips_max_per_cluster", "lpips_members", "lpips_small_clusters")


def cited_texts(name: str) -> list[str]:
    """The protocol's provenance texts; "lpips rules": "as <protocol>" stands for that
    protocol's texts of the three member rules."""
    texts = []
    for key, text in PROTOCOLS[name].sources.items():
        other = re.fullmatch(r"as ([\w-]+)", text)
        if other is None:
            texts.append(text)
            continue
        assert key == "lpips rules", (name, key)
        texts += [PROTOCOLS[other.group(1)].sources.get(rule, "") for rule in LPIPS_RULES]
    return texts


@pytest.mark.parametrize("name", NAMES)
def test_each_lpips_setting_agrees_with_the_source_it_cites(name):
    protocol = PROTOCOLS[name]
    claimed: dict[str, set] = {}
    for text in cited_texts(name):
        for pattern, setting, value in CLAIMS:
            for match in re.finditer(pattern, one_line(text)):
                claimed.setdefault(setting, set()).add(value(match))
    for setting in LPIPS_SETTINGS:
        if (name, setting) in UNCITED:
            assert setting not in claimed, f"{name}.{setting} is cited now: check it"
            continue
        assert claimed.get(setting) == {getattr(protocol, setting)}, (name, setting)


# --- apply_protocol ----------------------------------------------------------------------------


def test_the_defaults_are_the_clean_protocol():
    assert apply_protocol(MetricsSpec()).protocol == "clean"


def test_a_named_protocol_fills_in_its_settings():
    dcl = apply_protocol(MetricsSpec(protocol="dcl-paper"))
    assert (dcl.fid_backbone, dcl.fid_n_gen, dcl.fid_n_real) == ("pytorch-fid", 5000, 0)
    adam = apply_protocol(MetricsSpec(protocol="adam"))
    assert (adam.fid_n_real, adam.fid_backbone) == (5000, "torchvision-inception")
    embedded = apply_protocol(MetricsSpec(protocol="embedded"))
    assert (embedded.fid_backbone, embedded.lpips_backbone, embedded.fid_n_gen,
            embedded.cheap_n_samples) == ("toy", "toy", 1000, 50)
    weditgan = apply_protocol(MetricsSpec(protocol="weditgan"))
    assert (weditgan.lpips_members, weditgan.lpips_small_clusters) == ("first", "zero")
    # Repeating the protocol's own value is not a clash.
    same = apply_protocol(MetricsSpec(protocol="dcl-paper", fid_backbone="pytorch-fid"))
    assert same == dcl


def test_a_setting_that_departs_from_the_protocol_is_recorded_as_custom_and_named():
    applied = apply_protocol(MetricsSpec(protocol="dcl-paper", fid_n_gen=1000))
    assert applied.protocol == "custom"  # never the name it departed from
    assert (applied.fid_backbone, applied.fid_n_gen) == ("pytorch-fid", 1000)  # the rest kept
    departures = protocol_departures("dcl-paper", applied)
    assert departures == ["metrics.fid_n_gen = 1000 (the protocol has 5000)"]
    assert protocol_departures("dcl-paper", apply_protocol(MetricsSpec(protocol="dcl-paper"))) \
        == []
    # Departing to another registered protocol's settings records that protocol.
    assert apply_protocol(MetricsSpec(protocol="clean", lpips_members="first",
                                      lpips_small_clusters="zero")).protocol == "weditgan"


def test_custom_keeps_the_settings_and_is_recorded_as_custom():
    given = MetricsSpec(protocol="custom", fid_backbone="pytorch-fid", fid_n_gen=1000)
    applied = apply_protocol(given)
    assert applied.protocol == "custom"
    assert (applied.fid_backbone, applied.fid_n_gen) == ("pytorch-fid", 1000)
    assert replace(applied, protocol="custom") == given  # nothing else changed
    unnamed = apply_protocol(MetricsSpec(fid_backbone="pytorch-fid", fid_n_gen=1000))
    assert unnamed.protocol == "custom" and unnamed.fid_n_gen == 1000


def test_settings_equal_to_the_embedded_protocol_are_recorded_as_embedded():
    applied = apply_protocol(MetricsSpec(**EMBEDDED))
    assert applied.protocol == "embedded"
    assert replace(applied, protocol=MetricsSpec().protocol) == MetricsSpec(**EMBEDDED)


@pytest.mark.parametrize("metrics", [
    MetricsSpec(), MetricsSpec(protocol="dcl-paper"), MetricsSpec(protocol="adam"),
    MetricsSpec(protocol="custom", fid_n_gen=1000), MetricsSpec(**EMBEDDED),
    MetricsSpec(protocol="weditgan", realism="none", n_grid=3),
], ids=["defaults", "dcl-paper", "adam", "custom", "embedded-unnamed", "weditgan"])
def test_applying_twice_is_applying_once(metrics):
    once = apply_protocol(metrics)
    assert apply_protocol(once) == once


# --- experiments and old run folders ------------------------------------------------------------


def test_the_embedded_default_experiment_uses_the_embedded_protocol():
    metrics = load_experiment(None).metrics
    assert metrics.protocol == "embedded"
    assert (metrics.fid_backbone, metrics.fid_n_gen, metrics.cheap_n_samples) == ("toy", 1000, 50)
    assert metrics.lpips_backbone == "toy"


def test_the_embedded_default_switches_protocol_as_a_whole():
    metrics = load_experiment(None, values={"metrics.protocol": "clean"}).metrics
    assert metrics.protocol == "clean"
    assert (metrics.fid_backbone, metrics.fid_n_gen, metrics.fid_n_real) == ("inception", 5000, 0)
    assert (metrics.lpips_backbone, metrics.cheap_n_samples) == ("vgg", 200)


def test_an_old_run_config_without_a_protocol_resolves_to_embedded():
    data = load_experiment(None).runs()[0].to_dict()
    for key in ("protocol", "fid_n_real", "lpips_members", "lpips_small_clusters"):
        del data["metrics"][key]  # written before protocols existed
    for key, value in EMBEDDED.items():
        if key in data["metrics"]:
            assert data["metrics"][key] == value  # the embedded settings, spelled out
    spec = spec_from_dict(data)
    assert spec.metrics.protocol == "embedded"
    assert spec.metrics.fid_backbone == "toy" and spec.metrics.fid_n_gen == 1000


# --- the command line --------------------------------------------------------------------------


def test_protocols_command_lists_every_protocol():
    result = runner.invoke(app, ["protocols"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in NAMES:
        assert name in lines  # each protocol heads its own block
    dcl = result.output.split("\ndcl-paper\n", 1)[1].split("\n\n", 1)[0]
    assert "pytorch-fid" in dcl and "5,000" in dcl
    assert "custom" in result.output


def test_run_with_an_unknown_protocol_gets_one_clear_error(tmp_path):
    result = runner.invoke(app, ["run", "--protocol", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    text = one_line(result.output)
    assert "'nope'" in text and "Traceback" not in result.output
    for name in NAMES:
        assert name in text
    assert result.output.startswith("error:") and result.output.count("error:") == 1
    assert not list(tmp_path.iterdir())  # nothing was started


def test_resume_refuses_a_protocol(tmp_path):
    result = runner.invoke(app, ["run", "--resume", "--protocol", "clean", "--out",
                                 str(tmp_path)])
    assert result.exit_code == 2
    text = one_line(result.output)
    assert result.output.startswith("error:") and "Traceback" not in result.output
    assert "--protocol" in text and "--resume" in text
    assert not list(tmp_path.iterdir())


# --- the evaluator -----------------------------------------------------------------------------

SIZE = 32
N = 60  # generated samples per evaluation
N_REAL = 200  # metrics.fid_n_real, below the 2,500 images of the target set
SEED = 3  # not torch-fidelity's default 2020 nor 0, so a seed that is not passed shows


@pytest.fixture(scope="module")
def target():
    return load_target("toyfaces:sunglasses", SIZE, shots=10, seed=0)


@pytest.fixture(scope="module")
def toy():
    return build_extractor("toy", None, "cpu")


def pool_of(target) -> torch.Tensor:
    """N distinct 8-bit images: the ten shots themselves, ten shots with a little of another
    image mixed in, and forty other images of the target set."""
    shots = target.shots
    others = np.setdiff1d(np.arange(N_REAL, len(target.full)), target.shot_indices)[:40]
    mixed = 0.85 * shots + 0.15 * target.full[others[:10]]
    return from_uint8(to_uint8(torch.cat([shots, mixed, target.full[others]])))


def expected_memorised(fake: np.ndarray, shots: np.ndarray) -> float:
    """By hand: nearest shot by Euclidean distance, memorised when nearer than half that shot's
    distance to its nearest other shot."""
    to_shot = np.linalg.norm(fake[:, None, :] - shots[None, :, :], axis=2)
    between = np.linalg.norm(shots[:, None, :] - shots[None, :, :], axis=2)
    between[np.arange(len(shots)), np.arange(len(shots))] = np.inf
    nearest = to_shot.argmin(axis=1)
    return float(np.mean(to_shot[np.arange(len(fake)), nearest] < 0.5 * between.min(axis=1)[
        nearest]))


def reference_feature_metrics(fake: np.ndarray, real: np.ndarray, seed: int) -> dict:
    """KID, precision/recall and density/coverage from torch-fidelity and prdc."""
    f, r = torch.from_numpy(fake.astype(np.float64)), torch.from_numpy(real.astype(np.float64))
    subset = min(1000, len(real), len(fake))
    kid = kid_features_to_metric(f, r, kid_subsets=100, kid_subset_size=subset, rng_seed=seed,
                                 verbose=False)
    precision, recall = calculate_precision_recall_full(f, r, neighborhood=3)
    dc = prdc_reference.compute_prdc(real.astype(np.float64), fake.astype(np.float64),
                                     nearest_k=5)
    return {"kid": kid["kernel_inception_distance_mean"],
            "kid_std": kid["kernel_inception_distance_std"],
            "precision": precision, "recall": recall,
            "density": dc["density"], "coverage": dc["coverage"]}


def assert_matches_reference(row: dict, expected: dict) -> None:
    # torch-fidelity averages in float32: 1e-6 is far below one sample's share (1 / 300)
    for key in ("precision", "recall"):
        assert row[key] == pytest.approx(expected[key], abs=1e-6), key
    for key in ("density", "coverage"):
        assert row[key] == pytest.approx(expected[key], abs=1e-12), key
    for key in ("kid", "kid_std"):
        assert row[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-12), key


def test_evaluator_feature_metrics_match_the_references(target, toy):
    metrics = apply_protocol(MetricsSpec(
        protocol="custom", fid_backbone="toy", fid_n_gen=N, fid_n_real=N_REAL,
        lpips_backbone="toy", lpips_n_samples=N, lpips_max_per_cluster=N, cheap_n_samples=N,
        realism="none", ground_truth=False, n_grid=4, batch_size=16))
    evaluator = Evaluator(metrics, target, seed=SEED)
    pool = pool_of(target)
    row = evaluator.evaluate(ImagesAsGenerator(pool)).metrics
    assert row["protocol"] == metrics.protocol == "custom"

    # The real set is the first fid_n_real images of the target set, and the metadata says so.
    real = extract_features(to_uint8(target.full[:N_REAL]), toy)
    assert evaluator.real_feats.shape[0] == N_REAL
    np.testing.assert_array_equal(evaluator.real_feats, real)
    assert evaluator.protocol["fid_real_images"] == N_REAL
    assert f"{N_REAL} of {len(target.full)}" in evaluator.protocol["fid_real_set"]
    assert evaluator.protocol["protocol"] == "custom"

    fake = extract_features(to_uint8(pool), toy)
    assert_matches_reference(row, reference_feature_metrics(fake, real, SEED))

    shots = extract_features(to_uint8(target.shots), toy)
    memorised = expected_memorised(fake, shots)
    assert 10 / N <= memorised < 1  # the shot copies at least, not the other images
    assert row["memorised_features"] == pytest.approx(memorised, abs=1e-12)
    # The ten exact shot copies are at LPIPS 0 from their shot: memorised in LPIPS too.
    assert 10 / N <= row["memorised_lpips"] <= 1


def test_evaluator_measures_the_first_fid_n_gen_fixed_latent_samples(source_checkpoint):
    """A real generator: the samples are reproduced from the fixed latents, in the full
    evaluation's batches, and only the first fid_n_gen of them enter the feature metrics."""
    target = load_target("toyfaces:sunglasses", 16, shots=10, seed=0)
    torch.manual_seed(0)
    g = Generator(16, 32, 2, channels=CH).eval()
    n_fid, n_all, batch = 20, 24, 12
    metrics = apply_protocol(MetricsSpec(
        fid_backbone="toy", fid_n_gen=n_fid, fid_n_real=300, lpips_backbone="toy",
        lpips_n_samples=n_all, cheap_n_samples=8, realism="none", ground_truth=False,
        n_grid=4, batch_size=batch))
    assert metrics.protocol == "custom"
    evaluator = Evaluator(metrics, target, seed=SEED)
    toy = evaluator.extractor
    row = evaluator.evaluate(g).metrics
    assert row["protocol"] == "custom"

    with torch.no_grad():
        latents = FixedLatents(g, SEED + EVAL_SEED_OFFSET)
        images = [to_uint8(g([z], noise=noise)[0]) for z, noise in latents.batches(n_all, batch)]
    fake = extract_features(np.concatenate(images)[:n_fid], toy)
    real = extract_features(to_uint8(target.full[:300]), toy)
    assert_matches_reference(row, reference_feature_metrics(fake, real, SEED))
    shots = extract_features(to_uint8(target.shots), toy)
    assert row["memorised_features"] == pytest.approx(expected_memorised(fake, shots), abs=1e-12)
    assert 0 <= row["memorised_lpips"] <= 1
    cheap = evaluator.evaluate_cheap(g)
    assert cheap["protocol"] == "custom" and 0 <= cheap["memorised_lpips"] <= 1


# --- a tiny run ---------------------------------------------------------------------------------


def test_a_tiny_run_records_the_protocol_on_every_row_and_in_the_metadata(source_checkpoint,
                                                                         tmp_path):
    spec = tiny_spec(source_checkpoint,
                     schedule=ScheduleSpec(iterations=2, eval_every=2, cheap_every=1))
    spec = replace(spec, metrics=replace(spec.metrics, protocol="custom", lpips_members="first",
                                         lpips_small_clusters="zero"))
    assert spec.metrics.protocol == "custom"
    run_dir = run_adaptation(spec, tmp_path / "run")

    df = load_trajectories(run_dir)
    assert set(NEW_COLUMNS) <= set(df.columns)
    assert df["evaluation"].tolist() == ["full", "cheap", "full"]
    assert (df["protocol"] == "custom").all()
    full, cheap = df[df["evaluation"] == "full"], df[df["evaluation"] == "cheap"]
    assert full[list(NEW_COLUMNS[1:])].notna().all().all()
    assert cheap[["kid", "precision", "recall", "density", "coverage",
                  "memorised_features"]].isna().all().all()
    assert cheap["memorised_lpips"].between(0, 1).all()

    raw = pq.read_schema(run_dir / "trajectory.parquet").metadata[b"adaptscope.protocol"]
    protocol = json.loads(raw)
    assert protocol["protocol"] == "custom"
    assert protocol["fid_real_images"] == 2500  # fid_n_real = 0: the full target set
    assert (protocol["lpips_members"], protocol["lpips_small_clusters"]) == ("first", "zero")
