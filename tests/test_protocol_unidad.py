"""The `unidad` protocol (CRDI's and Uni-DAD's evaluator, plus CMMD) resolves to exactly its
settings, its two new settings leave every other protocol and every old config as it was, and
each setting cites where it comes from."""

from __future__ import annotations

import re

import pytest

from adaptscope.config import to_dict
from adaptscope.errors import ConfigError
from adaptscope.protocols import PROTOCOLS, SETTINGS
from adaptscope.spec import MetricsSpec, apply_protocol, protocol_departures
from adaptscope.train.experiment import load_experiment

UNIDAD = {"fid_backbone": "pytorch-fid", "fid_n_gen": 5000, "fid_n_real": 5000,
          "lpips_backbone": "vgg", "lpips_n_samples": 5000, "lpips_max_per_cluster": 50,
          "lpips_members": "first", "lpips_small_clusters": "zero", "cheap_n_samples": 200,
          "cmmd_backbone": "clip-vit-l14-336", "prdc_k": 5}

# Every earlier protocol's settings as they were before `unidad`, typed out: none computes CMMD
# and none changes the k of precision/recall (3) and density/coverage (5).
OLD = {"cmmd_backbone": None, "prdc_k": None}
LPIPS_CDC = {"lpips_backbone": "vgg", "lpips_n_samples": 1000, "lpips_max_per_cluster": 50,
             "lpips_members": "random", "lpips_small_clusters": "drop",
             "cheap_n_samples": 200}
EARLIER = {
    "embedded": {"fid_backbone": "toy", "fid_n_gen": 1000, "fid_n_real": 0,
                 "lpips_backbone": "toy", "lpips_n_samples": 1000, "lpips_max_per_cluster": 50,
                 "lpips_members": "random", "lpips_small_clusters": "drop",
                 "cheap_n_samples": 50, **OLD},
    "clean": {"fid_backbone": "inception", "fid_n_gen": 5000, "fid_n_real": 0, **LPIPS_CDC,
              **OLD},
    "dcl-paper": {"fid_backbone": "pytorch-fid", "fid_n_gen": 5000, "fid_n_real": 0,
                  **LPIPS_CDC, **OLD},
    "adam": {"fid_backbone": "torchvision-inception", "fid_n_gen": 5000, "fid_n_real": 5000,
             **LPIPS_CDC, **OLD},
    "weditgan": {"fid_backbone": "inception", "fid_n_gen": 5000, "fid_n_real": 0, **LPIPS_CDC,
                 "lpips_members": "first", "lpips_small_clusters": "zero", **OLD},
    "fd-dinov2": {"fid_backbone": "dinov2-vit-b14", "fid_n_gen": 5000, "fid_n_real": 0,
                  **LPIPS_CDC, **OLD},
}


def test_unidad_resolves_to_exactly_its_settings():
    applied = apply_protocol(MetricsSpec(protocol="unidad"))
    assert applied.protocol == "unidad"
    assert {k: getattr(applied, k) for k in SETTINGS} == UNIDAD
    assert PROTOCOLS["unidad"].settings() == UNIDAD
    # the settings alone, unnamed, are recognised as unidad
    assert apply_protocol(MetricsSpec(**UNIDAD)).protocol == "unidad"
    # and from a config, by name
    metrics = load_experiment(None, values={"metrics.protocol": "unidad"}).metrics
    assert {k: getattr(metrics, k) for k in SETTINGS} == UNIDAD


def test_the_earlier_protocols_are_unchanged():
    assert set(EARLIER) | {"unidad"} == set(PROTOCOLS.names())
    for name, settings in EARLIER.items():
        assert PROTOCOLS[name].settings() == settings, name
        assert apply_protocol(MetricsSpec(protocol=name)).protocol == name


def test_the_new_settings_default_to_nothing_and_stay_out_of_old_configs():
    default = MetricsSpec()
    assert (default.cmmd_backbone, default.prdc_k) == (None, None)
    written = to_dict(default)  # what config.toml holds
    assert "cmmd_backbone" not in written and "prdc_k" not in written
    # a run config written before these settings existed resolves to the protocol it had
    old = {k: v for k, v in to_dict(apply_protocol(MetricsSpec(protocol="dcl-paper"))).items()
           if k in SETTINGS}
    assert apply_protocol(MetricsSpec(**old)).protocol == "dcl-paper"


def test_departing_from_unidad_is_custom_and_named():
    applied = apply_protocol(MetricsSpec(protocol="unidad", prdc_k=3))
    assert applied.protocol == "custom"
    assert protocol_departures("unidad", applied) == [
        "metrics.prdc_k = 3 (the protocol has 5)"]
    # CMMD added to another protocol makes it custom too: the protocol fixes what is measured
    assert apply_protocol(MetricsSpec(protocol="clean",
                                      cmmd_backbone="clip-vit-l14-336")).protocol == "custom"
    metrics = load_experiment(None, ["metrics.protocol=unidad", "metrics.prdc_k=3"]).metrics
    assert (metrics.protocol, metrics.prdc_k) == ("custom", 3)


@pytest.mark.parametrize(("key", "value"), [("prdc_k", 0), ("cmmd_backbone", "")])
def test_bad_values_of_the_new_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"metrics.{key}"):
        MetricsSpec(**{key: value})


def test_every_unidad_setting_cites_a_tagged_source():
    sources = PROTOCOLS["unidad"].sources
    assert set(SETTINGS) <= set(sources)
    for key in set(SETTINGS) - {"cheap_n_samples"}:  # adaptscope's own, not a reference's
        assert re.match(r"\[[CSU]\] ", sources[key]), key
    # the confirmed ones name a file and line
    for key in ("fid_backbone", "fid_n_gen", "fid_n_real", "lpips_backbone", "lpips_members",
                "lpips_small_clusters", "prdc_k"):
        assert sources[key].startswith("[C]") and re.search(r"\.(py|sh):\d+", sources[key])
    # what no reference confirms is said so
    assert "[U]" in sources["cmmd_backbone"] and "[U]" in sources["lpips_max_per_cluster"]
