"""Write the evidence that the embedded world's source generator and toy net are fit for use.

    python experiments/embedded_world_report.py \\
        --checkpoint adaptscope/embedded/assets/toy_source.pt --out reports/embedded-world

Writes samples.png, real.png, quality.json and README.md (the numbers as tables, with what they
mean) into --out, and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from adaptscope.embedded import quality
from adaptscope.embedded.toynet import load_toynet, read_toynet_meta
from adaptscope.models import load_checkpoint

SHIPPED = "adaptscope/embedded/assets/toy_source.pt"
DEFAULT_OUT = "reports/embedded-world"
DEFAULT_N = 2000
DEFAULT_SEED = 0
SCRIPT = "python experiments/embedded_world_report.py"


def _cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table of a data frame, floats at `digits` decimals, NaN as a dash."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "|".join("---" for _ in df.columns) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines)


def command(args: argparse.Namespace) -> str:
    """The invocation that reproduces this run's numbers."""
    parts = [SCRIPT, f"--checkpoint {args.checkpoint}", f"--out {args.out}"]
    if args.n != DEFAULT_N:
        parts.append(f"--n {args.n}")
    if args.seed != DEFAULT_SEED:
        parts.append(f"--seed {args.seed}")
    if args.toynet:
        parts.append(f"--toynet {args.toynet}")
    return " ".join(parts)


def fid_table(fid: dict[str, Any]) -> pd.DataFrame:
    """FID of the generator and of the noise floor per sample size, with their ratio."""
    df = pd.DataFrame(fid["by_size"])
    df["ratio"] = df["fid_generated"] / df["fid_noise_floor"]
    return df.rename(columns={"n": "images per set", "fid_generated": "FID generated vs real",
                              "fid_noise_floor": "FID real vs real (noise floor)",
                              "ratio": "generated / floor"})


def readme(
    args: argparse.Namespace,
    step: Any,
    g_config: dict[str, Any],
    fid: dict[str, Any],
    attrs: pd.DataFrame,
    acc: pd.DataFrame,
    meta: dict[str, Any],
) -> str:
    """The report's Markdown: provenance, the regenerating command, tables and their meaning."""
    shipped = str(args.checkpoint) == SHIPPED
    regen = f"{SCRIPT} --checkpoint {SHIPPED} --out {DEFAULT_OUT}"
    attr_mean = attrs.drop(columns=["attribute", "levels"]).mean()
    attr_rows = pd.concat(
        [attrs, pd.DataFrame([{"attribute": "mean", "levels": "", **attr_mean.to_dict()}])],
        ignore_index=True,
    )
    recipe = meta.get("recipe", {})
    provenance = "" if shipped else (
        "These numbers come from another checkpoint than the shipped model:\n\n"
        f"```bash\n{command(args)}\n```\n\n"
    )
    return f"""# Embedded world: source generator and toy net quality

Evidence that the embedded world's source StyleGAN2 fits the ToyFaces source domain, and how
accurate the toy metric network is. **All FID numbers use the toy backbone** (`{fid['backbone']}`)
and are not comparable with Inception FID.

Regenerate this folder (about a minute on one CPU core):

```bash
{regen}
```

{provenance}- Generator: `{args.checkpoint}`, training step **{step}**, {g_config['size']} px,
  style_dim {g_config['style_dim']}, mapping depth {g_config['n_mlp']}.
- Toy net: `{args.toynet or "adaptscope/embedded/assets/toynet.pt"}` (backbone `{fid['backbone']}`).
- Samples: `g_ema` at truncation 1; latent and noise maps of sample i drawn from (seed {args.seed},
  i). Real images: ToyFaces source identities drawn at random from `SOURCE_RANGE` (the source
  domain the generator was trained on), rendered at the generator's resolution; sets are disjoint.
- Images are quantised to 8 bits before every measurement, as saved PNGs would be.

## Samples

| generated (64, seed {args.seed}) | real source (64) |
|---|---|
| ![generated](samples.png) | ![real](real.png) |

## FID against its noise floor

The noise floor is the FID between two disjoint sets of real source images of the same size: what
a generator that samples the true distribution would score. FID is biased upwards at small sizes,
so each row uses the first *n* images of every set. Toy-backbone FID has its own scale (its
128-d embedding is not normalised), so read it against the floor, never against Inception FID.

{markdown_table(fid_table(fid), 3)}

A generated / floor ratio near 1 means the toy backbone cannot tell generated from real images
at that sample size. The floor shrinks roughly like 1/*n* while a real gap between the
distributions does not, so a ratio that grows with *n* measures that gap, not sampling noise.

## Attribute distributions

Total-variation (TV) distance between level histograms, per attribute ({args.n} images each; 0 is
identical, 1 disjoint). Generated images have no ground truth, so their attributes are the toy
net's predictions.

- **tv_generated_vs_real**: predicted levels of generated images vs ground truth of real images.
- **tv_predicted_real_vs_truth**: the toy net's predictions on real images vs their ground truth;
  the part of the first column that the net's own errors can explain.
- **tv_generated_vs_predicted_real**: generated vs real, both through the net, so systematic
  errors of the net cancel; the cleanest measure of the generator's attribute mismatch.
- **tv_real_vs_real**: ground truth of two disjoint real sets; the sampling noise floor.

{markdown_table(attr_rows, 3)}

## Toy net held-out accuracy

Read from the toy net's saved metadata (held-out identities: the first
{recipe.get('eval_per_domain', '?')} of each target's full set and of the source range; trained
{recipe.get('steps', '?')} steps on identities disjoint from them). Attribute columns cover only
the domains where the attribute can be seen (a dash elsewhere).

{markdown_table(acc, 3)}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=SHIPPED, help="source StyleGAN2 checkpoint")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="images per set")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--toynet", default=None, help="ToyNet weights (default: shipped)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    ck = load_checkpoint(args.checkpoint)
    g = ck.g_ema.eval()
    step = ck.extra.get("step", "unknown")
    net = load_toynet(args.toynet)
    meta = read_toynet_meta(args.toynet)

    quality.sample_grid(g, out, n=64, seed=args.seed, scale=3)
    fid = quality.fid_vs_noise_floor(g, args.n, args.seed, net=net)
    attrs = quality.attribute_distances(g, args.n, args.seed, net=net)
    acc = quality.toynet_accuracy_table(meta)

    (out / "README.md").write_text(readme(args, step, g.config, fid, attrs, acc, meta))
    record = {"checkpoint": str(args.checkpoint), "step": step, "fid": fid,
              "attributes": attrs.to_dict(orient="records"),
              "toynet_heldout_accuracy": meta.get("heldout_accuracy", {})}
    (out / "quality.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    print(f"checkpoint {args.checkpoint} (step {step}); backbone {fid['backbone']}")
    print(fid_table(fid).to_string(index=False, float_format="%.3f"))
    print(attrs.to_string(index=False, float_format="%.3f"))
    print(acc.to_string(index=False, float_format="%.3f", na_rep="-"))
    print(f"wrote {out}/README.md, samples.png, real.png, quality.json")


if __name__ == "__main__":
    main()
