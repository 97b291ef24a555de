"""The embedded world's two source models side by side: the toy diffusion model and the toy
StyleGAN2, under the same source-quality checks (toy FID against the source set with its noise
floor, attribute coverage), so adaptation results of the two families start from known places.

    python experiments/diffusion_world_report.py --out reports/embedded-diffusion/source-quality

Writes diffusion-samples.png, gan-samples.png, real.png, quality.json and README.md into --out,
and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from embedded_world_report import markdown_table

from adaptscope.embedded import quality, toyfaces
from adaptscope.embedded.toynet import load_toynet
from adaptscope.images import save_grid
from adaptscope.models import load_checkpoint
from adaptscope.models.diffusion import load_diffusion

SCRIPT = "python experiments/diffusion_world_report.py"
SHIPPED_DIFFUSION = "adaptscope/embedded/assets/toy_diffusion.pt"  # run from the repository root
SHIPPED_GAN = "adaptscope/embedded/assets/toy_source.pt"
DEFAULT_OUT = "reports/embedded-diffusion/source-quality"


def measure(model, n: int, seed: int, net) -> dict:
    fid = quality.fid_vs_noise_floor(model, n, seed, net=net)
    attrs = quality.attribute_distances(model, n, seed, net=net)
    return {"fid": fid["fid_generated"], "floor": fid["fid_noise_floor"],
            "by_size": fid["by_size"],
            "tv_generated_vs_predicted_real": float(attrs["tv_generated_vs_predicted_real"]
                                                    .mean()),
            "tv_generated_vs_real": float(attrs["tv_generated_vs_real"].mean()),
            "attributes": attrs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffusion", default=SHIPPED_DIFFUSION)
    parser.add_argument("--gan", default=SHIPPED_GAN)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = load_toynet()
    loaded = load_diffusion(args.diffusion)
    models = {"diffusion": loaded.model.eval(), "gan": load_checkpoint(args.gan).g_ema.eval()}
    results = {name: measure(m, args.n, args.seed, net) for name, m in models.items()}
    for name, m in models.items():
        save_grid(quality.sample_images(m, 64, args.seed), out / f"{name}-samples.png", 8, 3)
    (idx,) = quality.real_indices(64, args.seed)
    save_grid(toyfaces.render("source", idx, 32), out / "real.png", 8, 3)

    table = pd.DataFrame([
        {"source model": name, "toy FID": r["fid"], "noise floor": r["floor"],
         "FID / floor": r["fid"] / r["floor"],
         "attribute TV (vs predicted real)": r["tv_generated_vs_predicted_real"],
         "attribute TV (vs truth)": r["tv_generated_vs_real"]}
        for name, r in results.items()])
    per_attr = results["diffusion"]["attributes"][["attribute", "tv_generated_vs_predicted_real",
                                                   "tv_real_vs_real"]].rename(
        columns={"tv_generated_vs_predicted_real": "diffusion"})
    per_attr.insert(2, "gan", results["gan"]["attributes"]["tv_generated_vs_predicted_real"])
    step = loaded.extra.get("step", "unknown")
    sampler = (f"DDIM, {quality.SAMPLER_STEPS} steps, eta 0, denoiser in "
               f"{quality.SAMPLER_PRECISION}, the {quality.SAMPLER_NOISE}'s noise")
    (out / "README.md").write_text(f"""# The embedded world's source models, side by side

The toy diffusion model (`{args.diffusion}`, {step:,} pretraining steps; recipe
`experiments/pretrain-diffusion.toml`) and the toy StyleGAN2 (`{args.gan}`) under the same checks:
{args.n} samples of each against {args.n} real ToyFaces source images, toy backbone, seed
{args.seed}. Diffusion samples: {sampler} (the embedded protocol's sampler). Regenerate:

```bash
{SCRIPT} --out {args.out}
```

{markdown_table(table, 3)}

The noise floor is the FID between two disjoint real sets of the same size. Attribute TV is the
mean total-variation distance between the toy net's predicted attribute levels of the samples and
of real images (0: the same mix of attributes; the real-vs-real floor is in the table below).

Per attribute (TV of predicted levels, samples vs real; `tv_real_vs_real`: the sampling floor):

{markdown_table(per_attr, 3)}

| diffusion samples | StyleGAN2 samples | real source |
|---|---|---|
| ![diffusion](diffusion-samples.png) | ![gan](gan-samples.png) | ![real](real.png) |
""")
    record = {name: {k: v for k, v in r.items() if k != "attributes"}
              for name, r in results.items()}
    record["diffusion"]["step"] = step
    (out / "quality.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(table.to_string(index=False, float_format="%.3f"))
    print(per_attr.to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
