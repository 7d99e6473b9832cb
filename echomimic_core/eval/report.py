"""Tables of evaluation results: per-clip rows, and the EchoMimicV2 paper's Table 2 layout."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .metrics import LABELS, LOWER_IS_BETTER, PAPER_METRICS

# The paper's Table 2 (EchoMimicV2 row and the two baselines), for side-by-side printing.
PAPER_ROWS = {
    "AnimateAnyone (paper)": {"fid": 58.98, "fvd": 1016.47, "ssim": 0.729, "psnr": 20.579, "efid": 3.784,
                              "sync_d": 13.887, "sync_c": 0.987, "hkc": 0.809, "hkv": 23.87, "csim": 0.387},
    "MimicMotion (paper)": {"fid": 53.47, "fvd": 622.62, "ssim": 0.702, "psnr": 19.278, "efid": 2.628,
                            "sync_d": 7.958, "sync_c": 1.495, "hkc": 0.907, "hkv": 24.82, "csim": 0.526},
    "EchoMimicV2 (paper)": {"fid": 49.33, "fvd": 598.45, "ssim": 0.738, "psnr": 21.986, "efid": 2.218,
                            "sync_d": 7.021, "sync_c": 7.219, "hkc": 0.923, "hkv": 25.28, "csim": 0.558},
}
_DIGITS = {"fid": 2, "fvd": 2, "ssim": 3, "psnr": 3, "efid": 3, "sync_d": 3, "sync_c": 3, "hkc": 3, "hkv": 2,
           "csim": 3, "lpips": 4}


def fmt(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{_DIGITS.get(metric, 3)}f}"


def _header(metrics) -> str:
    return "".join(f"{LABELS[m] + ('↓' if m in LOWER_IS_BETTER else '↑'):>10}" for m in metrics)


def format_table(result: dict, per_clip: bool = True) -> str:
    """Per-clip rows (per-clip metrics) and the summary row (clip mean / set value)."""
    metrics = result["metrics"]
    names = list(result["clips"]) if per_clip else []
    width = max([len("mean / set")] + [len(n) for n in names]) + 2
    lines = [f"{'clip':<{width}}{'frames':>7}{_header(metrics)}"]
    for n in names:
        row = result["clips"][n]
        cells = "".join(f"{('(set)' if m in result['set'] else fmt(m, row.get(m))):>10}" for m in metrics)
        lines.append(f"{n:<{width}}{row['frames']:>7}{cells}")
    total = sum(r["frames"] for r in result["clips"].values())
    cells = "".join(f"{fmt(m, result['summary'].get(m)):>10}" for m in metrics)
    lines.append(f"{'mean / set':<{width}}{total:>7}{cells}")
    if result.get("test_backbones"):
        lines.append("NOTE: computed with random TEST backbones - the numbers are not metrics.")
    return "\n".join(lines)


def paper_table(rows: dict[str, dict], include_paper: bool = True) -> str:
    """Rows ``{label: summary}`` in the paper's Table 2 column order, with the paper's own rows first."""
    all_rows = dict(PAPER_ROWS) if include_paper else {}
    all_rows.update(rows)
    width = max(len(k) for k in all_rows) + 2
    lines = [f"{'Methods':<{width}}{_header(PAPER_METRICS)}"]
    for label, summary in all_rows.items():
        lines.append(f"{label:<{width}}" + "".join(f"{fmt(m, summary.get(m)):>10}" for m in PAPER_METRICS))
    return "\n".join(lines)


def write_json(result: dict, path: str | os.PathLike) -> Path:
    """Atomic JSON write (inf/nan as strings so the file is strict JSON)."""

    def clean(v):
        if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(clean(result), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, p)
    return p
