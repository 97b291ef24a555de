"""Human-readable renderings of the summary table (mean ± std cells, Markdown)."""

from __future__ import annotations

import math

import pandas as pd

from adaptscope.viz.panels import experiment_title
from adaptscope.viz.style import method_label

# (summary quantity, column heading, decimals)
_DISPLAY: tuple[tuple[str, str, int], ...] = (
    ("converged_iteration", "realism converged (it)", 0),
    ("converged_stage_iteration", "converged (it of last stage)", 0),
    ("intra_lpips_at_convergence", "intra-LPIPS there", 3),
    ("relative_diversity_loss", "diversity lost", 3),
    ("lpips_slope_per_1k", "LPIPS slope /1k it", 4),
    ("final_fid", "final FID", 2),
    ("best_fid", "best FID", 2),
    ("final_intra_lpips", "final intra-LPIPS", 3),
    ("final_precision", "final precision", 3),
    ("final_recall", "final recall", 3),
    ("final_memorised_lpips", "final memorised (LPIPS)", 3),
    ("final_realism_pt", "final p_t", 3),
)


def _cell(mean: float, std: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:.{decimals}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.{decimals}f}"
    return text


def _text(value: object) -> str:
    return "–" if value is None or value is pd.NA or value != value else str(value)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as strings: one 'mean ± std' cell per quantity, backbones spelled out."""
    rows = []
    for _, r in summary.iterrows():
        row = {
            "experiment": experiment_title(r["source"], r["target"], r["shots"]),
            "method": method_label(str(r["method"])),
            "seeds": str(int(r["n_seeds"])),
        }
        converged = f"{int(r['n_converged'])}/{int(r['n_seeds'])}"
        for quantity, heading, decimals in _DISPLAY:
            row[heading] = _cell(r[f"{quantity}_mean"], r[f"{quantity}_std"], decimals)
        row["realism converged (it)"] += f" ({converged} seeds)"
        row["protocol"] = _text(r["protocol"])
        row["FID backbone"] = _text(r["fid_backbone"])
        row["LPIPS backbone"] = _text(r["lpips_backbone"])
        row["criterion"] = _text(r["criterion"])
        row["best FID selected on"] = _text(r.get("best_fid_selected_on"))
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """A pipe table, escaping the characters that would break it."""

    def esc(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(esc(c) for c in table.columns) + " |",
        "|" + "|".join("---" for _ in table.columns) + "|",
    ]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"
