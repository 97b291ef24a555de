"""Mutation check: plant known wrong programs in the code that produces numbers and check that
the tests guarding each one catch it. CI runs it after the test suite (`make mutation`).

    .venv/bin/python experiments/mutation_check.py            # every mutant (10-15 min)
    .venv/bin/python experiments/mutation_check.py ewc cdc    # the mutants whose id has a word

Each mutant replaces one exact piece of source text in a scratch copy of the package and runs
its guarding tests (fast ones, named by node id) against that copy. Before anything runs, every
mutant's text must occur exactly once in today's source: a mutant that no longer applies would
otherwise test nothing, so the check lists all of them and exits 2 (update the text to the
equivalent line, keeping the wrong program's intent). `tests/test_mutation_check.py` makes the
normal test suite fail on a stale mutant too.

Output: the scratch package's location and the unmutated tests passing, then one line per
mutant, `killed` or `SURVIVED`, its id, the first failing test's node id, and seconds; last the
score. Exit 0 when every mutant is killed, 1 when one survives or its run breaks (`BROKEN`:
pytest could not run the tests), 2 when a mutant does not apply or the unmutated tests fail.
A test that fails to start is no kill: each pytest run loads a guard plugin that stops it
unless `adaptscope` is imported from the scratch copy (the virtual environment's editable
install points at the checkout, so a wrong import would test unmutated code).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 600  # a mutant that makes its tests hang is killed by the timeout
GUARD = "_mutation_guard"
GUARD_SOURCE = '''"""Loaded by mutation_check.py into each pytest run of its scratch copy."""

import os
from pathlib import Path

import pytest

TREE = Path(os.environ["MUTATION_TREE"]).resolve()
REPORT = Path(os.environ["MUTATION_REPORT"])


def pytest_configure(config):
    """Refuse to run against any package but the scratch copy's: a mutant would then survive
    or die for the wrong reason."""
    import adaptscope

    where = Path(adaptscope.__file__).resolve()
    if TREE not in where.parents:
        raise pytest.UsageError(f"adaptscope imported from {where}, not from {TREE}")


def _first_failure(nodeid, when):
    if not REPORT.exists():
        REPORT.write_text(nodeid if when == "call" else f"{nodeid} ({when})")


def pytest_runtest_logreport(report):
    if report.failed:
        _first_failure(report.nodeid, report.when)


def pytest_collectreport(report):
    if report.failed:
        _first_failure(report.nodeid, "collection")
'''

# Guarding tests, by node id: each runs in seconds.
EVALUATOR = "tests/test_evaluator_known_answers.py::"
MATHS = "tests/test_method_maths.py::"
STEP = "tests/test_gan_step.py::"
ADAM = "tests/test_method_adam.py::"
RICK = "tests/test_method_rick.py::"
MINEGAN = "tests/test_method_minegan.py::"
BSA = "tests/test_method_bsa.py::"
PROTOCOLS = "tests/test_protocols.py::"
AUGMENT = "tests/test_augment.py::"
FEATURES = "tests/test_feature_metrics.py::"
SUMMARY = "tests/test_viz.py::"
SWITCHES = "tests/test_loop_switches.py::"
PINNED = "tests/test_pinned_defaults.py::"
RESUME_FAST = "tests/test_method_state_resume.py::"
METHOD_SWITCHES = "tests/test_method_switches.py::"
LOOP_SETTINGS = "tests/test_method_loop_settings.py::"
STAGES = "tests/test_stage_axes.py::"
SWEEP = "tests/test_sweep.py::"
SELECTION = "tests/test_validation_split.py::"
SEAM = "tests/test_family_seam.py::"
DIFFUSION = "tests/test_diffusion_methods.py::"


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str  # must occur exactly once in `file`
    new: str
    tests: tuple[str, ...]


def mutant(id: str, file: str, old: str, new: str, *tests: str) -> Mutant:
    return Mutant(id, file, old, new, tests)


MUTANTS = [
    # --- evaluation, losses and the GAN step ------------------------------------------------
    mutant("evaluator-fid-against-shots", "adaptscope/track/evaluate.py",
           "self.real_feats = real_features(real, self.extractor)",
           "self.real_feats = real_features(target.shots, self.extractor, cache=False)",
           EVALUATOR + "test_fid_reference_is_the_full_target_set_recorded_by_size_and_hash"),
    mutant("evaluator-pt-fixed", "adaptscope/track/evaluate.py",
           '"realism_pt": float(torch.cat(p_t).mean()) if p_t else math.nan,\n'
           '            "intra_lpips": result.mean,',
           '"realism_pt": 0.5,\n            "intra_lpips": result.mean,',
           EVALUATOR + "test_realism_is_the_classifier_mean"),
    mutant("evaluator-clusters-around-samples", "adaptscope/track/evaluate.py",
           "from_uint8(samples[: m.lpips_n_samples]), self.shots,",
           "from_uint8(samples[: m.lpips_n_samples]), from_uint8(samples[:10]),",
           EVALUATOR + "test_intra_lpips_is_clustered_around_the_shots"),
    mutant("ewc-no-fisher-weight", "adaptscope/methods/ewc.py",
           "(self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()",
           "((p - self.anchor[k]).pow(2)).sum()",
           MATHS + "test_ewc_penalty_is_fisher_weighted_squared_drift"),
    mutant("ewc-drift-not-squared", "adaptscope/methods/ewc.py",
           "(self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()",
           "(self.fisher[k] * (p - self.anchor[k]).abs()).sum()",
           MATHS + "test_ewc_penalty_is_fisher_weighted_squared_drift"),
    mutant("fisher-from-abs-gradient", "adaptscope/methods/fisher.py",
           "sums[group][k] += grad.detach().pow(2) * weight",
           "sums[group][k] += grad.detach().abs() * weight",
           "tests/test_fisher.py::test_mean_of_squared_per_sample_gradients_per_group"),
    mutant("cdc-every-anchor-at-layer-0", "adaptscope/methods/cdc.py",
           "torch.randint(1, g.num_layers, (self.params.feat_const_batch,)).tolist()",
           "[0] * self.params.feat_const_batch",
           MATHS + "test_cdc_draws_one_random_layer_per_anchor_and_weights_the_term"),
    mutant("cdc-without-weight", "adaptscope/methods/cdc.py",
           '{"cdc_dist": self.params.kl_weight * loss}', '{"cdc_dist": loss}',
           MATHS + "test_cdc_draws_one_random_layer_per_anchor_and_weights_the_term"),
    mutant("cdc-term-times-zero", "adaptscope/methods/cdc.py",
           '{"cdc_dist": self.params.kl_weight * loss}',
           '{"cdc_dist": 0 * self.params.kl_weight * loss}',
           MATHS + "test_cdc_draws_one_random_layer_per_anchor_and_weights_the_term"),
    mutant("infonce-without-l2-normalisation", "adaptscope/methods/losses.py",
           "a = F.normalize(anchors.reshape(anchors.shape[0], -1), dim=1)",
           "a = anchors.reshape(anchors.shape[0], -1)",
           MATHS + "test_info_nce_uses_cosine_similarity_of_unnormalised_features"),
    mutant("dcl-generator-negatives-from-adapted-g", "adaptscope/methods/dcl.py",
           "feats_t[layer], feats_s[layer], feats_s[layer], self.params.tau",
           "feats_t[layer], feats_s[layer], feats_t[layer], self.params.tau",
           MATHS + "test_dcl_generator_term_anchors_adapted_features_on_source_positives_and_"
           "negatives"),
    mutant("dcl-d-negatives-not-real-images", "adaptscope/methods/dcl.py",
           "return info_nce(f_t, f_s, f_real, self.params.tau",
           "return info_nce(f_t, f_s, f_s, self.params.tau",
           MATHS + "test_dcl_discriminator_term_contrasts_against_real_target_images"),
    mutant("dcl-d-positive-from-adapted-g", "adaptscope/methods/dcl.py",
           "return info_nce(f_t, f_s, f_real, self.params.tau",
           "return info_nce(f_t, f_t, f_real, self.params.tau",
           MATHS + "test_dcl_discriminator_term_contrasts_against_real_target_images"),
    mutant("intra-lpips-weighted-by-size", "adaptscope/metrics/intra_lpips.py",
           "mean = float(valid.mean()) if len(valid) else math.nan",
           "mean = float(np.average(valid, weights=[len(c) for c in chosen if len(c) >= 2]))",
           "tests/test_metrics_intra_lpips.py::test_clusters_of_different_sizes_count_equally"),
    mutant("saturating-generator-loss", "adaptscope/train/losses.py",
           "return F.softplus(-fake_logits).mean()", "return -F.softplus(fake_logits).mean()",
           STEP + "test_generator_step_is_the_non_saturating_loss"),
    mutant("d-loss-signs-swapped", "adaptscope/train/losses.py",
           "F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()",
           "F.softplus(-fake_logits).mean() + F.softplus(real_logits).mean()",
           STEP + "test_discriminator_step_is_the_logistic_loss"),
    mutant("r1-without-lazy-factor", "adaptscope/train/step.py",
           "loop.r1_gamma / 2 * r1 * loop.r1_every", "loop.r1_gamma / 2 * r1",
           STEP + "test_r1_step_is_gamma_over_two_times_r1_every_times_the_squared_input_gradient"),
    mutant("path-length-without-lazy-factor", "adaptscope/train/step.py",
           "loop.path_regularize * loop.path_every * pl", "loop.path_regularize * pl",
           STEP + "test_path_length_step_is_scaled_by_its_weight_times_its_lazy_interval"),
    mutant("path-length-decay", "adaptscope/train/losses.py",
           "decay: float = 0.01", "decay: float = 0.1",
           STEP + "test_path_length_penalty_follows_its_formula"),
    mutant("optimiser-without-lazy-ratio", "adaptscope/train/state.py",
           "c = every / (every + 1) if enabled else 1.0", "c = 1.0",
           STEP + "test_lazy_ratio_adam_and_ema"),
    mutant("ema-decay-inverted", "adaptscope/train/losses.py",
           "p_ema.lerp_(p, 1.0 - decay)", "p_ema.lerp_(p, decay)",
           STEP + "test_lazy_ratio_adam_and_ema"),
    mutant("freezed-trains-every-block", "adaptscope/methods/freezed.py",
           "for block in list(d.convs)[len(d.convs) - k:]:", "for block in list(d.convs):",
           MATHS + "test_freezed_discriminator_step_moves_only_its_trailing_blocks"),
    mutant("resume-reruns-setup", "adaptscope/train/gan_training.py",
           'self.method.load_state_dict(extra["method"])', "self.method.setup()",
           "tests/test_loop.py::test_crash_then_rerun_resumes_to_the_uninterrupted_trajectory"
           "[rick-0]"),
    # --- AdAM ---------------------------------------------------------------------------------
    mutant("adam-unit-at-the-cut-is-important", "adaptscope/methods/adam.py",
           "keep.update({w: s > cut for w, s in scores.items()})",
           "keep.update({w: s >= cut for w, s in scores.items()})",
           ADAM + "test_importance_from_a_known_fisher"),
    mutant("adam-modulation-u-v-transposed", "adaptscope/methods/adam.py",
           "w * (1 + torch.outer(self.v[k], u).view(w.shape))",
           "w * (1 + torch.outer(u, self.v[k]).view(w.shape))",
           ADAM + "test_modulation_is_w_times_one_plus_v_u_and_zero_gives_the_source_exactly"),
    mutant("adam-important-units-fine-tune", "adaptscope/methods/adam.py",
           "_units(p.grad)[self.keep[which][w]] = 0", "_units(p.grad)[~self.keep[which][w]] = 0",
           ADAM + "test_after_the_switch_important_kernels_keep_the_source_and_the_rest_fine_tune"),
    mutant("adam-g-ema-not-reset-at-the-switch", "adaptscope/methods/adam.py",
           "ctx.g_ema.load_state_dict(self._g_ema_source)", "ctx.g_ema.eval()",
           ADAM + "test_after_the_switch_important_kernels_keep_the_source_and_the_rest_fine_tune"),
    mutant("adam-probing-trains-g", "adaptscope/methods/adam.py",
           'if not (which == "d" and n.startswith("final")):',
           'if which == "d" and not n.startswith("final"):',
           ADAM + "test_probing_trains_only_the_modulations_and_ds_final_layers"),
    mutant("adam-fisher-d-loss-without-fakes", "adaptscope/methods/adam.py",
           '"d": F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()}, 1',
           '"d": F.softplus(-real_logit).mean()}, 1',
           ADAM + "test_probe_fisher_is_the_mean_squared_per_sample_gradient_of_each_networks_"
           "loss"),
    # --- RICK ---------------------------------------------------------------------------------
    mutant("rick-bias-importance-not-averaged", "adaptscope/methods/rick.py",
           "return (per_filter + fisher[unit.params[1]]) / 2 if len(unit.params) == 2",
           "return per_filter + fisher[unit.params[1]] if len(unit.params) == 2",
           RICK + "test_importance_per_filter_from_a_known_fisher"),
    mutant("rick-skip-convs-pruned-at-the-line", "adaptscope/methods/rick.py",
           "f.double() < lines[u.pool][1] if u.strict",
           "f.double() <= lines[u.pool][1] if u.strict",
           RICK + "test_pools_are_ranked_apart_and_skip_convs_prune_below_the_line_only"),
    mutant("rick-pruned-sets-replaced", "adaptscope/methods/rick.py",
           "self.pruned[u.net][name] = cut if old is None else old | cut",
           "self.pruned[u.net][name] = cut",
           RICK + "test_pruned_sets_accumulate_and_preserved_sets_are_replaced"),
    mutant("rick-preserved-filters-train", "adaptscope/methods/rick.py",
           "p.grad[(*lead, pruned | self.preserved[which][name])] = 0",
           "p.grad[(*lead, pruned)] = 0",
           RICK + "test_pruned_filters_are_zero_and_preserved_filters_keep_their_source_weights"),
    mutant("rick-fisher-at-the-live-d", "adaptscope/methods/rick.py",
           'nets = {"g": self.ctx.g_ema, "d": self.d_ema}',
           'nets = {"g": self.ctx.g_ema, "d": self.ctx.d}',
           RICK + "test_fisher_is_the_mean_squared_per_sample_gradient_at_the_moving_averages"),
    mutant("rick-masks-estimated-one-iteration-late", "adaptscope/methods/rick.py",
           "if self._due(step.iteration + 1):", "if self._due(step.iteration):",
           RICK + "test_masks_are_re_estimated_at_the_scheduled_iterations_only"),
    mutant("rick-d-ema-decay-inverted", "adaptscope/methods/rick.py",
           "ema.lerp_(p, 1.0 - self.params.d_ema_decay)", "ema.lerp_(p, self.params.d_ema_decay)",
           RICK + "test_state_round_trips_through_a_checkpoint"),
    # --- MineGAN ------------------------------------------------------------------------------
    mutant("minegan-miner-with-residual", "adaptscope/methods/minegan.py",
           "return self.transform(z)", "return z + self.transform(z)",
           MINEGAN + "test_miner_is_a_two_layer_relu_mlp_from_z_to_z_without_residual"),
    mutant("minegan-w-latents-through-the-miner", "adaptscope/methods/minegan.py",
           'if not kwargs.get("input_is_latent", False):\n            styles = [modules[0](s)',
           'if True:\n            styles = [modules[0](s)',
           MINEGAN + "test_generate_passes_w_latents_to_g_unchanged"),
    mutant("minegan-evaluation-always-live-miners", "adaptscope/methods/minegan.py",
           "if self.params.eval_live_miners:", "if True:",
           MINEGAN + "test_evaluation_samples_through_live_miners_or_their_averages"),
    mutant("minegan-mine-stage-one-iteration-longer", "adaptscope/methods/base.py",
           "for name, start in self.stages() if start <= iteration]",
           "for name, start in self.stages() if start < iteration]",
           MINEGAN + "test_stage_switches_after_miner_iterations"),
    mutant("minegan-g-trains-in-the-mine-stage", "adaptscope/methods/minegan.py",
           'if which == "g" and self.stage(step.iteration) == "mine":',
           'if which == "g" and self.stage(step.iteration) == "joint":',
           MINEGAN + "test_mine_stage_leaves_g_untouched_then_joint_stage_trains_it"),
    # --- BSA ----------------------------------------------------------------------------------
    mutant("bsa-emd-one-sided", "adaptscope/methods/bsa.py",
           "return dist.min(0).values.mean() + dist.min(1).values.mean()",
           "return dist.min(1).values.mean()",
           BSA + "test_emd_on_known_codes_and_samples"),
    mutant("bsa-regulariser-pulls-scales-to-zero", "adaptscope/methods/bsa.py",
           "(s - 1).square().mean() + b.square().mean()", "s.square().mean() + b.square().mean()",
           BSA + "test_stats_regulariser_on_known_scales_and_shifts"),
    mutant("bsa-shift-before-scale", "adaptscope/methods/bsa.py",
           "out * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)",
           "(out + shift.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)",
           BSA + "test_scale_and_shift_act_on_the_modulated_conv_output_before_noise_and_"
           "activation"),
    mutant("bsa-evaluation-without-temperature", "adaptscope/methods/bsa.py",
           "styles = [codes.w_mean + t * (g.style(s) - codes.w_mean) for s in styles]",
           "styles = [g.style(s) for s in styles]",
           BSA + "test_evaluation_latents_are_drawn_from_the_tempered_prior"),
    mutant("bsa-lr-shift-one-iteration-early", "adaptscope/methods/bsa.py",
           "self.params.lr_shift_scale ** ((iteration + 1) // every)",
           "self.params.lr_shift_scale ** (iteration // every)",
           BSA + "test_learning_rate_drops_by_the_scale_every_interval"),
    # --- switches between a paper's form and its authors' code: each does nothing --------------
    mutant("adam-conv-view-ignored", "adaptscope/methods/adam.py",
           'if self.conv_view == "reference" and w.dim() >= 4:', "if False:",
           METHOD_SWITCHES + "test_adam_reference_conv_view_is_the_codes_ger_u_v_viewed_as_the_"
           "kernel"),
    mutant("adam-style-scale-ignored", "adaptscope/methods/adam.py",
           'if self.style_scale == "reference" and w.dim() == 2', "if False and w.dim() == 2",
           METHOD_SWITCHES + "test_adam_style_scale_source_starts_at_the_source_and_reference_"
           "at_the_codes_kml_fc"),
    mutant("bsa-psi-ignored", "adaptscope/methods/bsa.py",
           "t = self.params.temperature", "t = 0.5",
           METHOD_SWITCHES + "test_bsa_psi_one_samples_the_generators_own_w_and_zero_its_mean"),
    mutant("bsa-perceptual-form-ignored", "adaptscope/methods/bsa.py",
           'if p.perceptual == "vgg_l1":', "if False:",
           METHOD_SWITCHES + "test_bsa_vgg_l1_on_the_embedded_world_is_the_weighted_l1_of_the_"
           "toy_backbones_features"),
    # --- protocols ----------------------------------------------------------------------------
    mutant("protocol-adam-uses-every-real-image", "adaptscope/protocols.py",
           'fid_backbone="torchvision-inception", fid_n_gen=5000, fid_n_real=5000,',
           'fid_backbone="torchvision-inception", fid_n_gen=5000, fid_n_real=0,',
           PROTOCOLS + "test_a_named_protocol_fills_in_its_settings"),
    mutant("protocol-cheap-samples-not-a-setting", "adaptscope/protocols.py",
           '"lpips_small_clusters", "cheap_n_samples", "cmmd_backbone",',
           '"lpips_small_clusters", "cmmd_backbone",',
           PROTOCOLS + "test_a_named_protocol_fills_in_its_settings"),
    mutant("protocol-matched-by-any-setting", "adaptscope/protocols.py",
           "if all(settings.get(k) == v for k, v in protocol.settings().items()):",
           "if any(settings.get(k) == v for k, v in protocol.settings().items()):",
           PROTOCOLS + "test_a_setting_that_departs_from_the_protocol_is_recorded_as_custom_and_"
           "named"),
    mutant("protocol-given-settings-override-nothing", "adaptscope/spec.py",
           "if getattr(metrics, k) != getattr(default, k)}",
           "if getattr(metrics, k) != getattr(metrics, k)}",
           PROTOCOLS + "test_a_setting_that_departs_from_the_protocol_is_recorded_as_custom_and_"
           "named"),
    mutant("protocol-departures-list-the-agreements", "adaptscope/spec.py",
           "for k, v in fixed.items() if getattr(metrics, k) != v]",
           "for k, v in fixed.items() if getattr(metrics, k) == v]",
           PROTOCOLS + "test_a_setting_that_departs_from_the_protocol_is_recorded_as_custom_and_"
           "named"),
    # --- ADA augmentation ---------------------------------------------------------------------
    mutant("augment-tie-raises-p", "adaptscope/train/augment.py",
           "n / self.length if self.r_t > self.target else",
           "n / self.length if self.r_t >= self.target else",
           AUGMENT + "test_step_uses_the_images_counted_and_ties_lower_p"),
    mutant("augment-p-not-clamped", "adaptscope/train/augment.py",
           "self.p = min(1.0, max(0.0, self.p + step))", "self.p = self.p + step",
           AUGMENT + "test_negative_logits_lower_p_and_clamp_at_zero"),
    mutant("augment-every-logit-counts-as-an-image", "adaptscope/train/augment.py",
           "self._n_seen += per_image.shape[0]", "self._n_seen += logits.numel()",
           AUGMENT + "test_several_logits_per_image_count_once_by_their_mean"),
    mutant("augment-rotations-each-at-p", "adaptscope/train/augment.py",
           "p_rot = 1.0 - math.sqrt(1.0 - p)", "p_rot = p",
           AUGMENT + "test_strengths_and_probabilities_follow_the_port"),
    mutant("augment-contrast-strength", "adaptscope/train/augment.py",
           "c = torch.exp(randn(n) * (0.5 * _LOG2))", "c = torch.exp(randn(n) * (0.2 * _LOG2))",
           AUGMENT + "test_strengths_and_probabilities_follow_the_port"),
    mutant("augment-selection-shifts-the-random-stream", "adaptscope/train/augment.py",
           "    coin = torch.rand(n, device=transform.device) < prob\n"
           "    if name not in chosen:\n        return prev\n",
           "    if name not in chosen:\n        return prev\n"
           "    coin = torch.rand(n, device=transform.device) < prob\n",
           AUGMENT + "test_selection_does_not_shift_the_random_stream"),
    mutant("augment-zero-padding", "adaptscope/train/augment.py",
           'mode="bilinear", padding_mode="reflection"', 'mode="bilinear", padding_mode="zeros"',
           AUGMENT + "test_known_answer_xflip_rot90_and_integer_translation"),
    mutant("augment-colour-shift-dropped", "adaptscope/train/augment.py",
           "torch.baddbmm(c[:, :3, 3:], c[:, :3, :3], flat)", "torch.bmm(c[:, :3, :3], flat)",
           AUGMENT + "test_known_answer_colour_matrix"),
    mutant("augment-state-drops-pending-images", "adaptscope/train/augment.py",
           '"n_seen": self._n_seen}', '"n_seen": 0}',
           AUGMENT + "test_state_dict_round_trip_resumes_bit_for_bit"),
    # --- feature metrics ----------------------------------------------------------------------
    mutant("kid-biased-mmd", "adaptscope/metrics/feature_metrics.py",
           "(off_xx + off_yy) / (m * (m - 1))", "(off_xx + off_yy) / (m * m)",
           FEATURES + "test_kid_hand_example"),
    mutant("kid-kernel-without-gamma", "adaptscope/metrics/feature_metrics.py",
           "k *= 1.0 / x.shape[1]", "k *= 1.0",
           FEATURES + "test_kid_equals_torch_fidelity"),
    mutant("prdc-knn-radius-counts-the-point-itself", "adaptscope/metrics/feature_metrics.py",
           "_distance_blocks(x, x, exclude_self=True)", "_distance_blocks(x, x)",
           FEATURES + "test_prdc_equals_prdc_package"),
    mutant("prdc-density-not-divided-by-k", "adaptscope/metrics/feature_metrics.py",
           "mf.fake_in_real.sum() / (k * f.shape[0])", "mf.fake_in_real.sum() / f.shape[0]",
           FEATURES + "test_prdc_equals_prdc_package"),
    mutant("prdc-coverage-inclusive", "adaptscope/metrics/feature_metrics.py",
           "(mf.nearest_fake < mf.real_radii).mean()", "(mf.nearest_fake <= mf.real_radii).mean()",
           FEATURES + "test_ball_boundary_strict_for_prdc_inclusive_for_precision_recall"),
    mutant("precision-recall-swapped", "adaptscope/metrics/feature_metrics.py",
           "mf = _manifolds(r, f, k, inclusive=True)\n"
           "    return float((mf.fake_in_real > 0).mean()), float(mf.real_in_fake.mean())",
           "mf = _manifolds(r, f, k, inclusive=True)\n"
           "    return float(mf.real_in_fake.mean()), float((mf.fake_in_real > 0).mean())",
           FEATURES + "test_precision_recall_equals_torch_fidelity"),
    mutant("memorisation-threshold-from-the-shot-itself", "adaptscope/metrics/feature_metrics.py",
           "np.fill_diagonal(d, np.inf)", "np.fill_diagonal(d, 0.0)",
           FEATURES + "test_memorised_fraction_hand_example"),
    # --- summaries ----------------------------------------------------------------------------
    mutant("summary-pt-threshold-strict", "adaptscope/viz/summary.py",
           "hit = its[pt >= pt_threshold]", "hit = its[pt > pt_threshold]",
           SUMMARY + "test_summary_thresholds_are_parameters"),
    mutant("summary-fid-tolerance-ignored", "adaptscope/viz/summary.py",
           "hit = its[fid <= fid.min() * (1 + fid_tolerance)]", "hit = its[fid <= fid.min()]",
           SUMMARY + "test_summary_matches_values_known_by_construction"),
    mutant("summary-diversity-loss-relative-to-the-end", "adaptscope/viz/summary.py",
           "rel_loss = (lpips[0] - lpips[-1]) / lpips[0]",
           "rel_loss = (lpips[0] - lpips[-1]) / lpips[-1]",
           SUMMARY + "test_summary_matches_values_known_by_construction"),
    mutant("summary-lpips-at-convergence-is-the-last", "adaptscope/viz/summary.py",
           "at_convergence = float(np.interp(converged, its, lpips))",
           "at_convergence = float(lpips[-1])",
           SUMMARY + "test_summary_matches_values_known_by_construction"),
    mutant("summary-std-over-seeds-ddof-0", "adaptscope/viz/summary.py",
           'out[f"{quantity}_std"] = grouped[quantity].std()',
           'out[f"{quantity}_std"] = grouped[quantity].std(ddof=0)',
           SUMMARY + "test_summary_matches_values_known_by_construction"),
    mutant("summary-finals-from-the-first-evaluation", "adaptscope/viz/summary.py",
           "return float(values.iloc[-1]) if len(values) else np.nan",
           "return float(values.iloc[0]) if len(values) else np.nan",
           SWEEP + "test_the_summary_gives_each_variant_its_own_row"),
    # --- the loop's switches, the newer methods' values, ground truth, summaries, resume -----
    mutant("flip-inverted", "adaptscope/train/loop.py",
           "    if not flip:", "    if flip:",
           SWITCHES + "test_flip_mirrors_about_half_the_shots_and_without_flip_none"),
    mutant("loop-ignores-train-flip", "adaptscope/train/loop.py",
           "real_batch(shots, batch, spec.train.flip)", "real_batch(shots, batch, True)",
           SWITCHES + "test_the_loop_passes_train_flip_and_mixing_on"),
    mutant("ada-skips-fakes-in-the-d-step", "adaptscope/train/step.py",
           "d_logistic_loss(real_logits, method.d_logits(step, fake_seen))",
           "d_logistic_loss(real_logits, method.d_logits(step, fake))",
           SWITCHES + "test_ada_augments_what_d_sees_reals_and_fakes_in"
           "_the_d_step_fakes_in_the_g_step"),
    mutant("ada-skips-fakes-in-the-g-step", "adaptscope/train/step.py",
           "g_nonsaturating_loss(method.d_logits(step, fake_seen))",
           "g_nonsaturating_loss(method.d_logits(step, fake))",
           SWITCHES + "test_ada_augments_what_d_sees_reals_and_fakes_in"
           "_the_d_step_fakes_in_the_g_step"),
    mutant("r1-on-unaugmented-reals", "adaptscope/train/step.py",
           "real_in = real_seen.detach().requires_grad_(True)",
           "real_in = step.real.detach().requires_grad_(True)",
           SWITCHES + "test_r1_differentiates_the_same_augmented_reals_that_d_loss_saw"),
    mutant("mixing-probability-inverted", "adaptscope/methods/base.py",
           "if mixing > 0 and torch.rand(()).item() < mixing:",
           "if mixing > 0 and torch.rand(()).item() > mixing:",
           SWITCHES + "test_the_sampler_draws_two_styles_with_the_mixing_probability"),
    mutant("path-length-one-style", "adaptscope/train/step.py",
           "mixing_noise(n, g.style_dim, loop.mixing, device)",
           "mixing_noise(n, g.style_dim, 0.0, device)",
           SWITCHES + "test_the_path_length_pass_draws_mixing_noise_too"),
    mutant("dcl-image-level-d-by-default", "adaptscope/methods/dcl.py",
           "patch_scheme: bool = hp(\n            True,",
           "patch_scheme: bool = hp(\n            False,",
           PINNED + "test_dcl_runs_on_the_patch_scheme_with_d"
           "_minimising_its_term_on_branch_features"),
    mutant("embedded-ewc-lambda-1e3", "adaptscope/embedded/assets/embedded-default.toml",
           "[ewc]\nlam = 100.0", "[ewc]\nlam = 1000.0",
           PINNED + "test_the_embedded_default_ewc_lambda_is_the_calibrated_100"),
    mutant("protocol-clean-lpips-alex", "adaptscope/protocols.py",
           'lpips_backbone="vgg",\n    lpips_n_samples=1000, lpips_max_per_cluster=50, '
           'lpips_members="random",\n    lpips_small_clusters="drop", cheap_n_samples=200,\n'
           '    description="clean-fid',
           'lpips_backbone="alex",\n    lpips_n_samples=1000, lpips_max_per_cluster=50, '
           'lpips_members="random",\n    lpips_small_clusters="drop", cheap_n_samples=200,\n'
           '    description="clean-fid',
           PROTOCOLS + "test_each_lpips_setting_agrees_with_the_source_it_cites"),
    mutant("adam-fisher-through-live-g", "adaptscope/methods/adam.py",
           'g, mods = ctx.g_ema, {"g": self.ema_g_modules[0]',
           'g, mods = ctx.g, {"g": self.ema_g_modules[0]',
           ADAM + "test_probe_fisher_is_the_mean_squared_per_sample"
           "_gradient_of_each_networks_loss"),
    mutant("adam-fisher-d-loss-signs", "adaptscope/methods/adam.py",
           '"d": F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()}',
           '"d": F.softplus(real_logit).mean() + F.softplus(-fake_logit).mean()}',
           ADAM + "test_probe_fisher_is_the_mean_squared_per_sample"
           "_gradient_of_each_networks_loss"),
    mutant("rick-g-trains-everything", "adaptscope/methods/rick.py",
           "return iter(self.ctx.g.convs.parameters())", "return iter(self.ctx.g.parameters())",
           RICK + "test_after_the_warm_up_g_trains_its_convs_and_d_all_but_its_first_block"),
    mutant("rick-d-trains-its-first-block", "adaptscope/methods/rick.py",
           "for module in [*list(d.convs)[1:], d.final_conv, d.final_linear]:",
           "for module in [*list(d.convs), d.final_conv, d.final_linear]:",
           RICK + "test_after_the_warm_up_g_trains_its_convs_and_d_all_but_its_first_block"),
    mutant("minegan-evaluates-the-live-g", "adaptscope/train/gan_training.py",
           "self.sampled = AdaptedGenerator(method, g_ema)", "self.sampled = g_ema",
           MINEGAN + "test_a_rows_samples_are_g_ema_through_the_live_miners"),
    mutant("bsa-codes-unscaled", "adaptscope/methods/bsa.py",
           "        return self.w_mean + self.w_std * c\n", "        return self.w_mean + c\n",
           BSA + "test_loss_terms_are_the_weighted_definitions_replayed_by_hand"),
    mutant("bsa-perceptual-with-pixel-weight", "adaptscope/methods/bsa.py",
           'losses["bsa_perceptual"] = p.perceptual_weight * dist.mean()',
           'losses["bsa_perceptual"] = p.pixel_weight * dist.mean()',
           BSA + "test_loss_terms_are_the_weighted_definitions_replayed_by_hand"),
    mutant("gt-replication-every-attribute", "adaptscope/track/evaluate.py",
           '"gt_replication": shot_replication(predicted, self.shots, self.observable)',
           '"gt_replication": shot_replication(predicted, self.shots)',
           EVALUATOR + "test_ground_truth_replication_reads_what"
           "_sunglasses_show_and_coverage_the_full_set"),
    mutant("gt-coverage-against-the-shots", "adaptscope/track/evaluate.py",
           '"gt_coverage": attribute_coverage(predicted, self.reference)',
           '"gt_coverage": attribute_coverage(predicted, self.shots)',
           EVALUATOR + "test_ground_truth_replication_reads_what"
           "_sunglasses_show_and_coverage_the_full_set"),
    mutant("memorised-lpips-ratio-1", "adaptscope/track/evaluate.py",
           "MEMORISED_RATIO = 0.5  #", "MEMORISED_RATIO = 1.0  #",
           EVALUATOR + "test_lpips_memorisation_counts_samples_inside_half_the_shots_nearest_gap"),
    mutant("best-fid-is-the-worst", "adaptscope/viz/summary.py",
           '"best_fid": float(fid.min()), "best_fid_selected_on"',
           '"best_fid": float(fid.max()), "best_fid_selected_on"',
           "tests/test_summary_values.py::test_best_fid_is_the_lowest_fid_of_the_full_evaluations"),
    mutant("module-averages-restored-from-the-live-modules", "adaptscope/methods/base.py",
           'ema.load_state_dict(state[f"g_module{i}_ema"])',
           'ema.load_state_dict(state[f"g_module{i}"])',
           RESUME_FAST + "test_resumed_state_equals_the_uninterrupted_state"),
    mutant("adam-stage-forgotten-on-resume", "adaptscope/methods/adam.py",
           'self.switched = bool(state["switched"])', "self.switched = False",
           RESUME_FAST + "test_resumed_state_equals_the_uninterrupted_state"),
    mutant("stage-of-the-previous-iteration", "adaptscope/train/loop.py",
           '"stage": method.stage(iteration)', '"stage": method.stage(max(iteration - 1, 0))',
           RESUME_FAST + "test_the_row_at_the_switch_names_the_stage_that_starts_there"),
    mutant("loss-means-lost-with-a-rolled-back-table", "adaptscope/train/loop.py",
           "columns = {**checkpoint_columns, **columns}", "columns = columns",
           "tests/test_recovery.py::test_rolling_back_to_the_previous_table_restores_every_column"),
    mutant("stage-start-of-the-first-stage", "adaptscope/methods/base.py",
           "return self._stage_at(iteration)[1]", "return self.stages()[0][1]",
           RESUME_FAST + "test_the_row_at_the_switch_names_the_stage_that_starts_there"),
    mutant("path-length-mean-carried-over-a-restart", "adaptscope/train/step.py",
           "self.mean_path_length = torch.zeros_like(self.mean_path_length)", "pass",
           STEP + "test_the_path_length_mean_restarts_with_the_optimisers"),
    mutant("lazy-adam-beta1-not-raised", "adaptscope/train/state.py",
           "betas=(betas[0] ** c, betas[1] ** c)", "betas=(betas[0], betas[1] ** c)",
           LOOP_SETTINGS + "test_the_optimisers_take_the_betas_raised_for_lazy_regularisation"),
    mutant("method-train-table-ignored", "adaptscope/train/experiment.py",
           'train = {**cls.loop_settings, **sections.get("train", {})}',
           "train = dict(cls.loop_settings)",
           LOOP_SETTINGS + "test_an_experiment_sets_a_methods_own_loop_and_schedule"),
    mutant("adam-probing-inside-the-adaptation-iterations", "adaptscope/methods/adam.py",
           "return params.probe_iterations  # adaptation", "return 0  # adaptation",
           LOOP_SETTINGS + "test_a_thrown_away_first_stage_comes_on_top_of_the_adaptation_"
           "iterations"),
    mutant("rick-at-the-shared-batch", "adaptscope/methods/rick.py",
           'loop_settings = {"batch": 2}', "loop_settings = {}",
           LOOP_SETTINGS + "test_each_method_runs_with_its_codes_optimiser_and_batch"),
    mutant("stage-aligned-not-shifted", "adaptscope/track/views.py",
           'rows["iteration"] = rows["iteration"] - start', "pass",
           STAGES + "test_stage_aligned_counts_each_run_from_its_last_stage"),
    mutant("stage-convergence-over-the-whole-run", "adaptscope/viz/summary.py",
           'in_stage, _ = _convergence(run[run["iteration"] >= start], pt_threshold, '
           "fid_tolerance)",
           "in_stage = converged",
           STAGES + "test_the_summary_gives_convergence_in_total_and_last_stage_iterations_and_"
           "images"),
    mutant("preflight-skips-set-sizes", "adaptscope/track/evaluate.py",
           "    problems = failing[-1:]  # the largest need",
           "    problems = failing[:0]  # the largest need",
           "tests/test_preflight_measurable.py::test_the_largest_unmet_need_is_named"),
    # --- sweeps and honest model selection ---------------------------------------------------
    mutant("sweep-method-setting-varies-every-method", "adaptscope/train/sweep.py",
           "return head == method or head not in METHODS", "return True",
           SWEEP + "test_a_method_setting_makes_variants_of_that_method_only"),
    mutant("sweep-grid-zipped-not-multiplied", "adaptscope/train/sweep.py",
           "itertools.product(*(grid[k] for k in keys))", "zip(*(grid[k] for k in keys))",
           SWEEP + "test_options_multiply_and_shared_settings_vary_every_method"),
    mutant("sweep-run-id-without-variant", "adaptscope/spec.py",
           'f"{_variant_slug(self.variant)}-s{self.seed}")', 'f"-s{self.seed}")',
           SWEEP + "test_grid_values_are_typed_by_the_setting_and_named_in_the_run_id"),
    mutant("sweep-variants-pooled-as-one-method", "adaptscope/viz/panels.py",
           'if "variant" not in df.columns or not df["variant"].notna().any():', "if True:",
           SWEEP + "test_the_summary_gives_each_variant_its_own_row"),
    mutant("validation-may-hold-a-shot", "adaptscope/track/target.py",
           "candidates = np.setdiff1d(np.arange(n_full), np.asarray(shot_positions, "
           "dtype=np.int64))", "candidates = np.arange(n_full)",
           SELECTION + "test_the_split_is_disjoint_from_the_reporting_set_and_holds_no_shot"),
    mutant("selection-fid-against-the-reporting-set", "adaptscope/track/evaluate.py",
           "real_features(target.validation, self.extractor))",
           "real_features(target.full, self.extractor))",
           SELECTION + "test_selection_fid_is_measured_against_the_held_out_images"),
    mutant("best-fid-selected-on-the-reporting-set", "adaptscope/viz/summary.py",
           'chosen = scored.loc[scored["fid_selection"].astype(float).idxmin()]',
           'chosen = scored.loc[scored["fid"].astype(float).idxmin()]',
           SELECTION + "test_the_best_fid_is_chosen_by_the_validation_split_where_recorded"),
    # --- the diffusion family ------------------------------------------------------------------
    mutant("diffusion-rows-recorded-as-gan", "adaptscope/track/tracker.py",
           '"family": self.family,', '"family": "gan",',
           SEAM + "test_a_diffusion_run_records_diffusion_rows"),
    mutant("ddim-noise-form-ignored", "adaptscope/models/diffusion.py",
           'use_clipped_model_output=self.noise == "clipped"', "use_clipped_model_output=False",
           SEAM + "test_sampling_is_deterministic_ddim[clipped]"),
    mutant("forward-process-without-sqrt", "adaptscope/models/diffusion.py",
           "return abar.sqrt() * x0 + (1 - abar).sqrt() * noise",
           "return abar * x0 + (1 - abar) * noise",
           DIFFUSION + "test_ddpm_ft_loss_is_the_ddpm_objective"),
    mutant("diffusion-resume-without-optimiser", "adaptscope/train/diffusion_training.py",
           '            self.step.opt.load_state_dict(obj["optimizer"])\n', "",
           SEAM + "test_a_diffusion_run_resumes_bit_for_bit"),
    mutant("family-mismatch-not-refused", "adaptscope/train/experiment.py",
           "if shipped is not None and shipped != cls.family:", "if False:",
           SEAM + "test_a_method_of_one_family_refuses_a_shipped_source_of_the_other"),
    mutant("lora-update-unscaled", "adaptscope/methods/lora.py",
           "return weight.detach() + self.scale * delta", "return weight.detach() + delta",
           DIFFUSION + "test_lora_merged_forward_equals_w_x_plus_scaled_b_a_x"),
    mutant("domainstudio-kl-reversed", "adaptscope/methods/domainstudio.py",
           "return (torch.xlogy(p, p) - p * log_q).mean()",
           "return (torch.xlogy(log_q.exp(), log_q.exp()) - log_q.exp() * p.log()).mean()",
           DIFFUSION + "test_pairwise_similarity_kl_equals_the_loops"),
    mutant("dreambooth-prior-unweighted", "adaptscope/methods/dreambooth.py",
           '"prior": self.params.prior_loss_weight * err[b:].mean()}', '"prior": err[b:].mean()}',
           DIFFUSION + "test_dreambooth_loss_is_instance_mse_plus_lambda_class_mse"),
    mutant("gu-rule-is-the-spacing-rule", "adaptscope/track/evaluate.py",
           '"gu_memorised_lpips": gu_memorised_fraction(result.sample_to_shot),',
           '"gu_memorised_lpips": memorised_fraction(result.sample_to_shot, '
           'result.shot_distances),',
           EVALUATOR + "test_gu_memorisation_in_lpips_and_features"),
    mutant("cmmd-unbiased-reported-as-biased", "adaptscope/track/evaluate.py",
           'return {"cmmd": value.biased,', 'return {"cmmd": value.unbiased,',
           EVALUATOR + "test_cmmd_of_the_protocol_is_measured_against_the_fid_real_set"),
]


# --------------------------------------------------------------------------- applying


def stale(mutants: Iterable[Mutant], root: Path) -> list[str]:
    """Why each mutant that does not apply to the source under `root` does not (empty when all
    apply): its file is missing, its text occurs other than once, or it changes nothing."""
    mutants, problems = list(mutants), []
    for m in mutants:
        path = root / m.file
        if not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = path.read_text().count(m.old)
        if count != 1:
            problems.append(f"{m.id}: its text occurs {count} times in {m.file}, not once: "
                            f"{m.old!r}")
        if m.old == m.new:
            problems.append(f"{m.id}: its replacement changes nothing")
        if not m.tests:
            problems.append(f"{m.id}: it names no guarding test")
    ids = [m.id for m in mutants]
    problems += [f"{i}: the id is used {ids.count(i)} times" for i in sorted(set(ids))
                 if ids.count(i) > 1]
    return problems


def scratch_copy(dest: Path) -> Path:
    """The package, its tests, the experiments some tests load, and pyproject.toml (the pytest
    settings) under `dest`."""
    for name in ("adaptscope", "tests", "experiments"):
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / f"{GUARD}.py").write_text(GUARD_SOURCE)
    return dest


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Outcome:
    returncode: int
    first_failure: str | None  # node id of the first failing test, None when all passed
    seconds: float
    log: Path

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    @property
    def killed(self) -> bool:
        """Tests ran and one failed (1), or a mutated module broke collection (2), or the run
        hung (-1). Anything else (usage error, no tests, the guard's refusal) is no kill."""
        return self.returncode in (1, 2, -1) and self.first_failure is not None


def run_tests(tree: Path, tests: Iterable[str], work: Path, label: str) -> Outcome:
    """Run `tests` with pytest against the package in `tree`, stopping at the first failure."""
    report, log = work / f"{label}.first-failure", work / f"{label}.log"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1",
           "MUTATION_TREE": str(tree), "MUTATION_REPORT": str(report)}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider",
           "-p", GUARD, *sorted(set(tests))]
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            code = subprocess.run(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=RUN_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            code = -1
            report.write_text(f"timeout after {RUN_TIMEOUT_S} s")
    first = report.read_text() if report.exists() else None
    return Outcome(code, first, time.perf_counter() - start, log)


def tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text().splitlines()[-lines:])


def check(mutant: Mutant, tree: Path, work: Path) -> Outcome:
    """Apply `mutant` to the scratch copy, run its tests, then restore the file."""
    path = tree / mutant.file
    source = path.read_text()
    path.write_text(source.replace(mutant.old, mutant.new, 1))
    try:
        return run_tests(tree, mutant.tests, work, mutant.id)
    finally:
        path.write_text(source)


def main(words: list[str], mutants: list[Mutant] | None = None) -> int:
    mutants = MUTANTS if mutants is None else mutants
    problems = stale(mutants, ROOT)
    if problems:
        print(f"{len(problems)} mutant(s) do not apply to today's source; update them in "
              f"{Path(__file__).name} (nothing was run):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    chosen = [m for m in mutants if not words or any(w in m.id for w in words)]
    if not chosen:
        print(f"no mutant id contains {' or '.join(words)}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="adaptscope-mutants-") as tmp:
        tree, work = scratch_copy(Path(tmp) / "tree"), Path(tmp)
        print(f"package under test: {tree / 'adaptscope'} (a scratch copy of {ROOT})")
        clean = run_tests(tree, [t for m in chosen for t in m.tests], work, "unmutated")
        print(f"unmutated code: tests {'pass' if clean.passed else 'FAIL'} "
              f"({clean.seconds:.0f} s)", flush=True)
        if not clean.passed:
            print(f"first failure: {clean.first_failure}\n{tail(clean.log)}", file=sys.stderr)
            return 2
        killed = broken = 0
        for m in chosen:
            outcome = check(m, tree, work)
            if outcome.killed:
                killed += 1
                status = "killed"
            elif outcome.passed:
                status = "SURVIVED"
            else:
                broken += 1
                status = "BROKEN"
            print(f"{status:<8} {m.id:<44} {outcome.first_failure or '-'}  "
                  f"{outcome.seconds:5.1f} s", flush=True)
            if status == "BROKEN":
                print(f"  pytest exited {outcome.returncode}:\n{tail(outcome.log)}",
                      file=sys.stderr)
    print(f"mutation score: {killed}/{len(chosen)} killed"
          f"{f', {broken} broken runs' if broken else ''} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
