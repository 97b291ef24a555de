"""Mutation check: plant a known wrong program in the code that produces numbers, run the tests
that guard it, and count how many wrong programs the suite catches.

    .venv/bin/python experiments/mutation_check.py            # every mutant (about 20 min)
    .venv/bin/python experiments/mutation_check.py ewc cdc    # the mutants whose id has a word

Each mutant replaces one exact piece of source text (which must occur exactly once) in a
scratch copy of the package, then runs the listed tests against that copy. A mutant is killed
when a test fails. The list holds the wrong programs that once passed every test (metrics,
methods, the GAN step, evaluation, resume) and a few more of the same kind; it is not run by
`make test`. Prints one line per mutant and the mutation score.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVALUATOR = ["tests/test_evaluator_known_answers.py"]
MATHS = ["tests/test_method_maths.py"]
STEP = ["tests/test_gan_step.py"]
LPIPS = ["tests/test_metrics_intra_lpips.py"]
RESUME = ["tests/test_loop.py::test_crash_then_rerun_resumes_to_the_uninterrupted_trajectory"]


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    old: str
    new: str
    tests: list[str]


MUTANTS = [
    Mutant("evaluator-fid-against-shots", "adaptscope/track/evaluate.py",
           "real_statistics(target.full, self.extractor)",
           "real_statistics(target.shots, self.extractor)", EVALUATOR),
    Mutant("evaluator-pt-fixed", "adaptscope/track/evaluate.py",
           '"realism_pt": float(torch.cat(p_t).mean()) if p_t else math.nan',
           '"realism_pt": 0.5', EVALUATOR),
    Mutant("evaluator-clusters-around-samples", "adaptscope/track/evaluate.py",
           "from_uint8(samples[: m.lpips_n_samples]), self.shots,",
           "from_uint8(samples[: m.lpips_n_samples]), from_uint8(samples[:10]),", EVALUATOR),
    Mutant("ewc-no-fisher-weight", "adaptscope/methods/ewc.py",
           "(self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()",
           "((p - self.anchor[k]).pow(2)).sum()", MATHS),
    Mutant("ewc-drift-not-squared", "adaptscope/methods/ewc.py",
           "(self.fisher[k] * (p - self.anchor[k]).pow(2)).sum()",
           "(self.fisher[k] * (p - self.anchor[k]).abs()).sum()", MATHS),
    Mutant("ewc-fisher-from-abs-gradient", "adaptscope/methods/ewc.py",
           "fisher[k] += gr.detach().pow(2) * b", "fisher[k] += gr.detach().abs() * b", MATHS),
    Mutant("cdc-every-anchor-at-layer-0", "adaptscope/methods/cdc.py",
           "torch.randint(1, g.num_layers, (self.params.feat_const_batch,)).tolist()",
           "[0] * self.params.feat_const_batch", MATHS),
    Mutant("cdc-without-weight", "adaptscope/methods/cdc.py",
           '{"cdc_dist": self.params.kl_weight * loss}', '{"cdc_dist": loss}', MATHS),
    Mutant("cdc-term-times-zero", "adaptscope/methods/cdc.py",
           '{"cdc_dist": self.params.kl_weight * loss}',
           '{"cdc_dist": 0 * self.params.kl_weight * loss}', MATHS),
    Mutant("infonce-without-l2-normalisation", "adaptscope/methods/losses.py",
           "a = F.normalize(anchors.reshape(anchors.shape[0], -1), dim=1)",
           "a = anchors.reshape(anchors.shape[0], -1)", MATHS),
    Mutant("dcl-generator-negatives-from-adapted-g", "adaptscope/methods/dcl.py",
           "feats_t[layer], feats_s[layer], feats_s[layer], self.params.tau",
           "feats_t[layer], feats_s[layer], feats_t[layer], self.params.tau", MATHS),
    Mutant("dcl-d-negatives-not-real-images", "adaptscope/methods/dcl.py",
           "info_nce(f_t[block], f_s[block], f_real[block]",
           "info_nce(f_t[block], f_s[block], f_s[block]", MATHS),
    Mutant("dcl-d-positive-from-adapted-g", "adaptscope/methods/dcl.py",
           "info_nce(f_t[block], f_s[block], f_real[block]",
           "info_nce(f_t[block], f_t[block], f_real[block]", MATHS),
    Mutant("intra-lpips-weighted-by-size", "adaptscope/metrics/intra_lpips.py",
           "mean = float(valid.mean()) if len(valid) else math.nan",
           "mean = float(np.average(valid, weights=[len(c) for c in chosen if len(c) >= 2]))",
           LPIPS),
    Mutant("saturating-generator-loss", "adaptscope/train/losses.py",
           "return F.softplus(-fake_logits).mean()",
           "return -F.softplus(fake_logits).mean()", STEP),
    Mutant("d-loss-signs-swapped", "adaptscope/train/losses.py",
           "F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()",
           "F.softplus(-fake_logits).mean() + F.softplus(real_logits).mean()", STEP),
    Mutant("r1-without-lazy-factor", "adaptscope/train/step.py",
           "loop.r1_gamma / 2 * r1 * loop.r1_every", "loop.r1_gamma / 2 * r1", STEP),
    Mutant("path-length-without-lazy-factor", "adaptscope/train/step.py",
           "loop.path_regularize * loop.path_every * pl", "loop.path_regularize * pl", STEP),
    Mutant("path-length-decay", "adaptscope/train/losses.py",
           "decay: float = 0.01", "decay: float = 0.1", STEP),
    Mutant("adam-without-lazy-ratio", "adaptscope/train/state.py",
           "c = every / (every + 1) if enabled else 1.0", "c = 1.0", STEP),
    Mutant("ema-decay-inverted", "adaptscope/train/losses.py",
           "p_ema.lerp_(p, 1.0 - decay)", "p_ema.lerp_(p, decay)", STEP),
    Mutant("freezed-trains-every-block", "adaptscope/methods/freezed.py",
           "for block in list(d.convs)[len(d.convs) - k:]:", "for block in list(d.convs):",
           MATHS),
    Mutant("resume-reruns-setup", "adaptscope/train/loop.py",
           'method.load_state_dict(extra["method"])', "method.setup()", RESUME),
]


def run_tests(tree: Path, tests: list[str]) -> tuple[bool, float]:
    """(passed, seconds) of the tests run against the package in `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return result.returncode == 0, time.perf_counter() - start


def scratch_copy(dest: Path) -> Path:
    for name in ("adaptscope", "tests"):
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def check(mutant: Mutant, tree: Path) -> tuple[bool, float]:
    path = tree / mutant.file
    source = path.read_text()
    count = source.count(mutant.old)
    if count != 1:
        raise SystemExit(f"{mutant.id}: the text to replace occurs {count} times in "
                         f"{mutant.file}; update the mutant")
    path.write_text(source.replace(mutant.old, mutant.new))
    try:
        passed, seconds = run_tests(tree, mutant.tests)
    finally:
        path.write_text(source)
    return not passed, seconds


def main(words: list[str]) -> int:
    chosen = [m for m in MUTANTS if not words or any(w in m.id for w in words)]
    with tempfile.TemporaryDirectory(prefix="adaptscope-mutants-") as tmp:
        tree = scratch_copy(Path(tmp))
        tests = sorted({t for m in chosen for t in m.tests})
        clean, seconds = run_tests(tree, tests)
        print(f"unmutated code: tests {'pass' if clean else 'FAIL'} ({seconds:.0f} s)")
        if not clean:
            return 2
        killed = 0
        for mutant in chosen:
            dead, seconds = check(mutant, tree)
            killed += dead
            print(f"{'killed  ' if dead else 'SURVIVED'} {mutant.id:<42} {seconds:5.0f} s",
                  flush=True)
    print(f"mutation score: {killed}/{len(chosen)} killed")
    return 0 if killed == len(chosen) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
