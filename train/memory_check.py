"""Measure one real training step's memory on the CPU at a small size; calibrate train/estimate.py by it.

    python train/memory_check.py [--resolutions 64 128 192] [--frames 4] [--full-frames 24] [--small-only]
    python train/estimate.py --calibrate           # the same
    python train/memory_check.py --device cuda --full-width --resolutions 768 --frames 24 --small-only
                                                   # on a GPU: the full-size step measured (not run here)

The step is estimate.py's `training_step` (TrainNet forward + backward, gradient checkpointing on, the
PhD decode on/off as estimate.py models it) on real, randomly initialised networks of the SD layout with
narrow channels (UNet (32, 64, 128, 128) × 2 layers, 8 heads, VAE (16, 32, 64, 64)), batch 1.

What is measured, per case (stage 1 with and without the PhD decode, stage 2 with a few frames):

* **peak**: the highest number of bytes held by tensors allocated during the step, above what was held
  when it started; torch's CPU allocator reports every allocation and free to `torch.profiler` when
  `profile_memory=True`, so this is the running sum of those events (the CPU analogue of
  `torch.cuda.max_memory_allocated() - memory_allocated()` before the step). Weights, their gradients
  (allocated before the step, as after a first step) and the inputs are in the baseline, so the peak is what
  estimate.py calls activations plus what it leaves out: checkpoint recompute, the backward's transient
  gradients of activations, temporaries. Under mixed precision the weights are cast to bf16 beforehand:
  the ops see the same 16-bit weights as under autocast with fp32 master weights, without autocast's
  cached 16-bit copies, which scale with the parameters rather than the activations and are added at
  full size as 2 B × trainable parameters (all alive at the end of the forward, so an upper bound).
* **saved**: the distinct storages autograd saves for backward, recorded with
  `torch.autograd.graph.saved_tensors_hooks` (the hook estimate.py counts with), deduplicated by storage,
  without the storages of the parameters and of the step's inputs (the baseline); their real dtype.
  With non-reentrant checkpointing the tensors saved inside a checkpointed block go to the checkpoint's
  own hooks, in both counts.

Peak is the figure that decides whether a step fits, so it is compared with counted = estimate.py's
`count_step` of the same configuration on the meta device (every saved tensor × 2 bytes), less the
saved tensors that are parameters (the peak has the weights in its baseline). Two precisions: bf16
(the trainer's mixed precision, CPU autocast rules) against the 2-byte count, which calibrates the 768²
figures; fp32 against a 4-byte count, which checks the counting without dtype questions. Both peak and
count are close to straight lines in the number of pixels, with constants (audio tokens, transient
weight gradients) that matter at 64 px and not at 768², so the calibration ratio is the ratio of their
slopes, fitted over the measured sizes (default 64, 128, 192 px). The 768² activations are scaled per
stage: stage 2 by its ratio, stage 1 as (UNet ratio) × (count without PhD) + (decode ratio) × (the rest),
the decode ratio fitted on the difference of the cases with and without PhD (so the latent-crop row
scales too). What the count misses is in the backward: in stage 2 its peak is ~2x the live bytes at
the end of the forward, in autograd's gradient buffers (most likely the activations' gradients held
along the UNet's skip connections until the down path's backward uses them).

Limits: a calibration at 64-192 px and 1/10 of the width, not a measurement at 768²; CPU autocast is not
CUDA autocast (norms and attention kernels differ); the CUDA context, cuDNN workspaces and allocator
fragmentation are not in it. Re-measure on a GPU with `--device cuda` (above) or
`torch.cuda.max_memory_allocated()` after a few steps of a real run (train/README.md, "Memory and time
per step").
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from train import estimate as E

SMALL_UNET = {"block_out_channels": [32, 64, 128, 128], "norm_num_groups": 32}  # 2 layers, 8 heads as SD1.5
SMALL_POSE = {"conditioning_embedding_channels": 32}  # the pose blocks keep their full widths
SMALL_VAE = {"block_out_channels": [16, 32, 64, 64], "layers_per_block": 2, "latent_channels": 4, "norm_num_groups": 16}
GIB = 2 ** 30


SMALL = {"unet": SMALL_UNET, "pose": SMALL_POSE, "vae": SMALL_VAE}
FULL = {"unet": {}, "pose": {}, "vae": E.FULL_VAE_KWARGS}  # the full-size networks (for a GPU)


def small_networks(seed: int = 0, layout: dict | None = None):
    """(reference UNet, denoiser, PoseEncoder, VAE) of `layout` (overrides of the full-size configs;
    default SMALL) on the current default device, seeded."""
    from echomimic_core.models import SD_IMAGE_VARIATIONS_UNET_CONFIG

    lay = layout or SMALL
    torch.manual_seed(seed)
    return E.build_networks({**SD_IMAGE_VARIATIONS_UNET_CONFIG, **lay["unet"]}, lay["pose"], lay["vae"])


def _peak_of(prof) -> int:
    """Highest running sum of the CPU allocator's alloc/free events recorded by the profiler."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _live_at(prof, t_ns: int) -> int:
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.start_ns() <= t_ns]
    return sum(e.nbytes() for e in events)


def measure(resolution: int, frames: int, stage: int, phd: bool, phd_latent_crop=None, amp: bool = True,
            nets=None, seed: int = 0, device: str = "cpu") -> dict:
    """Peak and saved bytes of one real step of the small networks (module docstring); bf16 autocast if
    `amp`. On a CUDA device the peak is `torch.cuda.max_memory_allocated()` above the step's start."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    ref, den, pose, vae = nets or small_networks(seed)
    net = E.train_net(ref, den, pose, vae, stage, grad_ckpt=True)
    for m in (net, vae):  # bf16: the ops see what autocast would cast them to, without the copies (see above)
        torch.nn.Module.to(m, dev, torch.bfloat16 if amp else torch.float32)  # (diffusers' .to warns needlessly)
    trainable = [p for p in net.parameters() if p.requires_grad]
    for p in trainable:  # gradients belong to the exact weights/grads/AdamW count, not to activations
        p.grad = torch.zeros_like(p)
    torch.manual_seed(seed + 1)
    with dev:
        inputs = E.step_inputs(resolution, frames)
    before = {t.untyped_storage().data_ptr() for t in [*net.parameters(), *vae.parameters(), *inputs.values()]
              if isinstance(t, torch.Tensor)}  # the baseline: not counted as saved either
    saved: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in before and st.nbytes():
            saved[st.data_ptr()] = st.nbytes()  # the tensor is returned, so its storage stays alive: ptrs unique
        return t

    marks = {}
    cuda = dev.type == "cuda"
    amp_ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    prof_ctx = contextlib.nullcontext() if cuda else profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    mark = (lambda: torch.cuda.memory_allocated(dev) - base) if cuda else time.time_ns
    t0 = time.perf_counter()
    with amp_ctx, prof_ctx as prof, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        E.training_step(net, vae, inputs, phd, phd_latent_crop, before_backward=lambda: marks.setdefault("fwd", mark()))
    if cuda:
        torch.cuda.synchronize(dev)
        peak, fwd = torch.cuda.max_memory_allocated(dev) - base, marks["fwd"]
    else:
        peak, fwd = _peak_of(prof), _live_at(prof, marks["fwd"])
    return {"peak_bytes": peak, "forward_end_bytes": fwd, "saved_bytes": sum(saved.values()),
            "grad_bytes": sum(p.numel() * p.element_size() for p in trainable),
            "seconds": round(time.perf_counter() - t0, 2)}


def counted(resolution: int, frames: int, stage: int, phd: bool, phd_latent_crop=None, bytes_per_element=2,
            layout=None) -> dict:
    """estimate.py's count (meta device) of the same configuration."""
    with torch.device("meta"):
        ref, den, pose, v = small_networks(layout=layout)
    return E.count_step(ref, den, pose, v, resolution, frames, stage, phd, True, phd_latent_crop, bytes_per_element)


def compare(resolution: int, frames: int, stage: int, phd: bool, amp: bool = True, layout=None,
            device: str = "cpu") -> dict:
    """Measured vs counted for one small case. `ratio` = peak / the count without the saved weights
    (the measured peak excludes the weights' storage: it is in the baseline)."""
    m = measure(resolution, frames, stage, phd, amp=amp, nets=small_networks(layout=layout), device=device)
    c = counted(resolution, frames, stage, phd, bytes_per_element=2 if amp else 4, layout=layout)
    act = c["saved_bytes"] - c["saved_param_bytes"]
    return {**m, "counted_bytes": c["saved_bytes"], "counted_activation_bytes": act, "ratio": m["peak_bytes"] / act}


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:.2f}"


def _slope(xs, ys) -> tuple[float, float, float]:
    """Least-squares line y = a + b x: (b, a, largest |residual| / max y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    return b, a, max(abs(a + b * x - y) for x, y in zip(xs, ys)) / max(ys)


def _fits(res: dict, sizes) -> dict:
    """Per part (stage-1 UNet, stage-1 PhD decode = the PhD case minus the no-PhD case, stage 2): the
    bf16 peak and the count as lines in the number of pixels, and the ratio of their slopes."""
    def part(key, sz):
        r = res[(sz, True)]
        if key == "s1_decode":
            return (r["s1_phd"]["peak_bytes"] - r["s1_nophd"]["peak_bytes"],
                    r["s1_phd"]["counted_activation_bytes"] - r["s1_nophd"]["counted_activation_bytes"])
        return r[key]["peak_bytes"], r[key]["counted_activation_bytes"]

    fits = {}
    px = [s * s for s in sizes]
    for key in ("s1_unet", "s1_decode", "s2"):
        name = "s1_nophd" if key == "s1_unet" else key
        pk, ct = zip(*(part(name, sz) for sz in sizes))
        bp, ap_, ep = _slope(px, pk)
        bc, ac, ec = _slope(px, ct)
        fits[key] = {"peak_per_px": bp, "peak_const": ap_, "peak_fit_err": ep, "count_per_px": bc,
                     "count_const": ac, "count_fit_err": ec, "ratio": bp / bc}
    return fits


def calibrate(resolutions=(64, 128, 192), frames: int = 4, full_frames: int = 24, full: bool = True,
              out=print, layout=None, device: str = "cpu") -> dict:
    """The small-case table (each size, both precisions), the per-pixel fits and, with `full`, the 768²
    per-GPU figures with the counted activations scaled by the ratio of the per-pixel slopes (bf16):
    at 768² the parts of the count and of the peak that do not grow with the image (audio tokens,
    weight-gradient transients) are negligible, at 64-192 px they are not. One size: the table only."""
    cases = {"s1_phd": (1, 1, True), "s1_nophd": (1, 1, False), "s2": (2, frames, False)}
    res: dict = {}
    lay = layout or SMALL
    out(f"measured on {device}, batch 1, SD layout with UNet {lay['unet'].get('block_out_channels', 'full size')}"
        f", VAE {lay['vae']['block_out_channels']}, gradient checkpointing on; MiB")
    out("| size | case | precision | counted | counted w/o weights | saved (distinct, measured) | peak (measured) "
        "| at end of forward | peak / counted w/o weights | s |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    for size in resolutions:
        for amp in (True, False):
            for name, (stage, f, phd) in cases.items():
                r = res.setdefault((size, amp), {})[name] = compare(size, f, stage, phd, amp, layout, device)
                label = f"stage {stage}, {f} frame{'s' if f > 1 else ''}, PhD {'on' if phd else 'off'}"
                out(f"| {size}² | {label} | {'bf16' if amp else 'fp32'} | {_mib(r['counted_bytes'])} "
                    f"| {_mib(r['counted_activation_bytes'])} | {_mib(r['saved_bytes'])} | {_mib(r['peak_bytes'])} "
                    f"| {_mib(r['forward_end_bytes'])} | {r['ratio']:.2f} | {r['seconds']} |")
    if len(resolutions) < 2:
        return {"small": res}
    fits = _fits(res, resolutions)
    out("\nper-pixel fits over the sizes (bf16): bytes per image pixel, and the constant")
    out("| part | peak: B/px, const MiB, worst residual | count: B/px, const MiB, worst residual | ratio of slopes |")
    out("|---|---|---|---|")
    for key, q in fits.items():
        out(f"| {key} | {q['peak_per_px']:.0f}, {_mib(q['peak_const'])}, {100 * q['peak_fit_err']:.1f} % "
            f"| {q['count_per_px']:.0f}, {_mib(q['count_const'])}, {100 * q['count_fit_err']:.1f} % "
            f"| {q['ratio']:.2f} |")
    if not full:
        return {"small": res, "fits": fits}
    r_unet, r_dec, r_s2 = (fits[k]["ratio"] for k in ("s1_unet", "s1_decode", "s2"))

    def act_of(est):  # counted activations per sample without the saved weights, GiB
        return est["activation_gb_per_sample"] - est["saved_weights_gb_per_sample"]

    base = act_of(E.estimate(768, 1, 1, phd=False))
    rows = [("stage 1, PhD full decode", 1, 1, True, None, 4), ("stage 1, PhD on 48² latent crop", 1, 1, True, 48, 4),
            ("stage 2", 2, full_frames, False, None, 4), ("stage 2", 2, full_frames, False, None, 1)]
    out("\n768² per GPU, GiB (ESTIMATE: counted at full size, activations scaled by the measured ratio of slopes)")
    out("| setting | batch | weights+grads+AdamW, frozen | bf16 weight copies | activations counted "
        "| activations calibrated | total calibrated | estimate.py's total |")
    out("|---|---|---|---|---|---|---|---|")
    full_rows, cache = [], {}
    for label, stage, f, phd, crop, batch in rows:
        key = (stage, f, phd, crop)
        if key not in cache:
            cache[key] = E.estimate(768, f, stage, phd=phd, phd_latent_crop=crop)
        est = cache[key]
        act = act_of(est)
        cal = r_s2 * act if stage == 2 else r_unet * base + r_dec * (act - base)
        states = est["trainable_params"] * 16 / GIB + est["frozen_params"] * 2 / GIB
        copies = est["trainable_params"] * 2 / GIB  # autocast's cached casts of the fp32 trainable weights
        total = states + copies + cal * batch
        uncal = E.report(est, batch, 312.0, 0.35, 8)["memory_gb_total_est"]
        full_rows.append({"setting": label, "frames": f, "batch": batch, "states_gb": states, "copies_gb": copies,
                          "activations_counted_gb": act * batch, "activations_calibrated_gb": cal * batch,
                          "total_gb": total, "estimate_total_gb": uncal})
        out(f"| {label}{f', {f} frames' if f > 1 else ''} | {batch} | {states:.1f} | {copies:.1f} | {act * batch:.1f} "
            f"| {cal * batch:.1f} | {total:.1f} | {uncal} |")
    return {"small": res, "fits": fits, "full": full_rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 192], help="small measured sizes (pixels)")
    ap.add_argument("--frames", type=int, default=4, help="stage-2 frames in the small measured run")
    ap.add_argument("--full-frames", type=int, default=24, help="stage-2 frames of the 768² rows")
    ap.add_argument("--small-only", action="store_true", help="skip the full-size counts")
    ap.add_argument("--device", default="cpu", help="cuda: measure with torch.cuda.max_memory_allocated")
    ap.add_argument("--full-width", action="store_true",
                    help="the full-size networks instead of the narrow ones (a GPU; e.g. --resolutions 768)")
    a = ap.parse_args(argv)
    calibrate(a.resolutions, a.frames, a.full_frames, full=not a.small_only, layout=FULL if a.full_width else None,
              device=a.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
