"""Frame agreement and the results table of ``bench/vs_official.py``."""

from __future__ import annotations

import math

import numpy as np

#: canonical phases in table order; a profile's own names are matched to them by these keywords
PHASES = (("import", ("import", "startup")), ("load", ("load", "model")), ("audio", ("audio", "whisper")),
          ("poses", ("pose",)), ("reference", ("ref",)), ("denoise", ("denois", "sampl", "unet", "loop", "step")),
          ("decode", ("decod", "vae")), ("write", ("writ", "encod", "mux", "video")))
BLOCK = 8
PSNR_TARGET = 30.0


def canonical(name: str) -> str | None:
    low = name.lower()
    for phase, keys in PHASES:
        if any(k in low for k in keys):
            return phase
    return None


def map_phases(phases: dict) -> dict:
    """{canonical phase or the profile's own name: seconds} (several names may add into one phase)."""
    out: dict = {}
    for name, sec in (phases or {}).items():
        if not isinstance(sec, (int, float)):
            continue
        key = canonical(name) or name
        out[key] = out.get(key, 0.0) + float(sec)
    return out


def read_mp4_frames(path) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` RGB frames of an mp4 (PyAV)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """max-abs, PSNR and 8x8-block PSNR between two uint8 videos ``[F, H, W, 3]`` (first common frames).

    Block PSNR: both videos averaged over 8x8 pixel blocks first (in [0, 255]), then the PSNR of those block
    means; it measures the picture and not the per-pixel texture that the H.264 encoder re-quantises.
    """
    n = min(len(a), len(b))
    if n == 0 or a.shape[1:] != b.shape[1:]:
        return {"frames_compared": 0, "error": f"shapes {a.shape} vs {b.shape}"}
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    f, h, w, c = x.shape
    hb, wb = h // BLOCK, w // BLOCK
    xb = x[:, :hb * BLOCK, :wb * BLOCK].reshape(f, hb, BLOCK, wb, BLOCK, c).mean(axis=(2, 4))
    yb = y[:, :hb * BLOCK, :wb * BLOCK].reshape(f, hb, BLOCK, wb, BLOCK, c).mean(axis=(2, 4))
    per_frame = [_psnr(float(((xb[i] - yb[i]) ** 2).mean())) for i in range(f)]
    return {"frames_compared": n, "frames": [len(a), len(b)], "max_abs": float(np.abs(x - y).max()),
            "mean_abs": float(np.abs(x - y).mean()), "psnr": _psnr(float(((x - y) ** 2).mean())),
            "block_psnr": _psnr(float(((xb - yb) ** 2).mean())), "block_psnr_min_frame": min(per_frame)}


def _fmt(v, spec=".1f"):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def table(runs: list, title: str) -> str:
    """Text table: one column per run (the first is the official one), phases, end to end, memory, agreement."""
    names = [r["name"] for r in runs]
    mapped = [map_phases(r.get("phases")) for r in runs]
    extra = sorted({k for m in mapped for k in m} - {p for p, _ in PHASES})
    rows = [p for p, _ in PHASES] + extra
    width = max(12, *(len(n) + 2 for n in names))
    lines = [title, f"{'seconds':<22}" + "".join(f"{n:>{width}}" for n in names)
             + "".join(f"{'x ' + n:>{width}}" for n in names[1:])]
    official = runs[0]

    def row(label, values, ratio=True):
        cells = "".join(f"{_fmt(v):>{width}}" for v in values)
        if ratio:
            for v in values[1:]:
                cells += f"{(_fmt(values[0] / v, '.2f') + 'x') if values[0] and v else '-':>{width}}"
        lines.append(f"{label:<22}{cells}")

    for phase in rows:
        if any(phase in m for m in mapped):
            row(phase, [m.get(phase) for m in mapped])
    row("other (start-up, glue)", [r.get("other") for r in runs])
    row("END TO END", [r.get("wall") for r in runs])
    row("END TO END, CPU s", [r.get("cpu") for r in runs])
    lines.append(f"{'peak RSS MiB':<22}" + "".join(f"{_fmt(r.get('peak_rss_mb'), '.0f'):>{width}}" for r in runs))
    if any(r.get("peak_cuda_mb") for r in runs):
        lines.append(f"{'peak CUDA MiB':<22}" + "".join(f"{_fmt(r.get('peak_cuda_mb'), '.0f'):>{width}}" for r in runs))
    lines.append(f"{'frames':<22}" + "".join(f"{_fmt(r.get('frames'), 'd'):>{width}}" for r in runs))
    lines.append(f"agreement with {official['name']} (decoded mp4s; block = {BLOCK}x{BLOCK} means, target "
                 f">= {PSNR_TARGET:g} dB):")
    for r in runs:
        ag = r.get("agreement")
        if not ag:
            continue
        if "error" in ag:
            lines.append(f"  {r['name']:<18} {ag['error']}")
            continue
        ok = "ok" if ag["block_psnr"] >= PSNR_TARGET else "BELOW TARGET"
        lines.append(f"  {r['name']:<18} max-abs {ag['max_abs']:.0f}  mean-abs {ag['mean_abs']:.3f}  PSNR "
                     f"{_fmt(ag['psnr'])} dB  block PSNR {_fmt(ag['block_psnr'])} dB (worst frame "
                     f"{_fmt(ag['block_psnr_min_frame'])}) [{ok}]")
    floor = official.get("codec_floor")
    if floor and "error" not in floor:
        lines.append(f"  codec alone: official frames vs its own mp4: max-abs {floor['max_abs']:.0f}  PSNR "
                     f"{_fmt(floor['psnr'])} dB  block PSNR {_fmt(floor['block_psnr'])} dB")
    return "\n".join(lines)
