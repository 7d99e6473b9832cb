"""Side by side: the official EchoMimicV2 pipeline vs ours, same weights, inputs, seed and settings.

Each side runs in its own process with the same thread settings: the official code from a local checkout
of antgroup/echomimic_v2 (``--official-src``; driven by ``bench/_official_runner.py``, which documents its
few run-time shims; nothing of it is copied here), ours only through the CLI
(``python -m echomimic_core generate ...``). Weights: a random-weight model folder in the official layout
built from the official configs at a size preset (``bench/_bench_models.py``) or ``--models DIR``. Inputs
default to the shared test media (a demo portrait resized to the output size, the 8 s speech, demo pose
sequence 01 looped to the length). Prints per-phase wall time, end to end, the speed ratio, peak memory
(ru_maxrss of each process; CUDA peak where known) and how well the outputs agree (max-abs, PSNR and
8x8-block PSNR of the decoded mp4s against the official one).

Our phases come from ``generate --profile-json`` when the CLI has it (``generate --help`` is read); without
it our row shows only end to end. ``--variant NAME="--flag ..."`` adds more runs of ours with extra
``generate`` flags (speed options); their agreement with the official frames is the quality cost.

    # the issue's CPU setting (medium random weights, 256x256, 48 frames, 4 steps, cfg 2.5, context 12/3)
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/vs_official.py --official-src /path/to/echomimic_v2
    .venv/bin/python bench/vs_official.py --official-src SRC --size tiny --frames 24 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _vs_metrics import agreement, map_phases, read_mp4_frames, table  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
DEMO = REPO / "echomimic_core" / "assets" / "demo"


def default_inputs() -> dict:
    if (MEDIA / "pose" / "01").is_dir():
        return {"image": MEDIA / "ref_images" / "echomimicv2_demo_0035.png",
                "audio": MEDIA / "audio" / "speech_en_8s_16k_mono.wav", "poses": MEDIA / "pose" / "01"}
    return {"image": DEMO / "reference.png", "audio": DEMO / "audio.wav", "poses": None}


def prepare_inputs(a, work: Path) -> dict:
    """Reference image at the output size (PIL bicubic, as infer.py resizes) and an official pose folder of
    at least ``--frames`` files (the given one looped), so both sides read identical files."""
    from PIL import Image

    defaults = default_inputs()
    image = Path(a.image or defaults["image"])
    poses = a.poses or defaults["poses"]
    if poses is None:
        raise SystemExit("error: no pose folder found; pass --poses DIR (an official folder of N.npy)")
    src = sorted(Path(poses).glob("*.npy"), key=lambda p: int(p.stem))
    if not src:
        raise SystemExit(f"error: {poses} has no N.npy pose files")
    inputs = work / "inputs"
    pose_dir = inputs / f"poses_{a.frames}"
    pose_dir.mkdir(parents=True, exist_ok=True)
    for k in range(a.frames):
        target = pose_dir / f"{k}.npy"
        if not target.exists():
            target.write_bytes(src[k % len(src)].read_bytes())
    ref = inputs / f"ref_{a.width}x{a.height}.png"
    Image.open(image).convert("RGB").resize((a.width, a.height), Image.BICUBIC).save(ref)
    audio = Path(a.audio or defaults["audio"])
    return {"image": ref, "audio": audio, "poses": pose_dir}


def run_process(cmd, env, log: Path, timeout: float) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds (user + system), exit code and the child's own peak RSS
    (os.wait4, so runs never mix). At one thread the CPU seconds are what an idle machine's wall time would be,
    so they are the comparable figure on a shared machine."""
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.time() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                status = -9
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status) if status != -9 else -9
    return {"wall": time.perf_counter() - t, "rc": proc.returncode, "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "cpu": usage.ru_utime + usage.ru_stime, "log": str(log)}


def tail(path, n=15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def generate_flags(python: str, env) -> set:
    out = subprocess.run([python, "-m", "echomimic_core", "generate", "--help"], capture_output=True, text=True,
                         env=env, cwd=REPO).stdout
    return {tok.rstrip(",=") for tok in out.split() if tok.startswith("--")}


def build_models(a, work: Path, env) -> Path:
    if a.models:
        return Path(a.models)
    out = work / f"models_{a.size}"
    cmd = [a.python, str(REPO / "bench" / "_bench_models.py"), str(out), "--size", a.size,
           "--device", a.build_device or a.device or "cpu"]
    proc = subprocess.run(cmd, env=env, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"error: building the {a.size} model folder failed ({proc.returncode})")
    return out


def common(a) -> list:
    return ["--width", str(a.width), "--height", str(a.height), "--steps", str(a.steps), "--cfg", str(a.cfg),
            "--seed", str(a.seed), "--context-frames", str(a.context_frames),
            "--context-overlap", str(a.context_overlap), "--max-frames", str(a.frames), "--preset", a.preset]


def run_official(a, models, inputs, work, env) -> dict:
    result = work / "official.json"
    frames = work / "official_frames.npy"
    out = work / "official.mp4"
    for p in (result, frames, out):
        p.unlink(missing_ok=True)
    cmd = [a.python, str(REPO / "bench" / "_official_runner.py"), "--official-src", str(a.official_src),
           "--models", str(models), "--image", str(inputs["image"]), "--audio", str(inputs["audio"]),
           "--poses", str(inputs["poses"]), "--out", str(out), "--result", str(result),
           "--frames-out", str(frames)] + common(a)
    if a.device:
        cmd += ["--device", a.device]
    if a.dtype:
        cmd += ["--dtype", a.dtype]
    r = run_process(cmd, env, work / "official.log", a.timeout)
    r.update(name="official", mp4=str(out))
    if r["rc"] != 0 or not result.is_file():
        r["error"] = f"official run failed (rc {r['rc']}); log {r['log']}:\n{tail(r['log'])}"
        return r
    info = json.loads(result.read_text())
    r.update(phases=info["phases"], frames=info["frames"], peak_cuda_mb=info.get("peak_cuda_mb"),
             shims=info.get("shims"))
    r["wall"] -= info.get("untimed", 0.0)  # the frame dump for the comparison is not part of the run
    r["cpu"] -= info.get("untimed", 0.0)
    r["other"] = r["wall"] - sum(info["phases"].values())
    if frames.is_file() and out.is_file():
        import numpy as np

        r["codec_floor"] = agreement(np.load(frames), read_mp4_frames(out))
    return r


def run_ours(a, name, extra, models, inputs, work, env, flags) -> dict:
    out = work / f"{name}.mp4"
    profile = work / f"{name}_profile.json"
    for p in (out, profile):
        p.unlink(missing_ok=True)
    cmd = [a.python, "-m", "echomimic_core", "generate", "--models", str(models), "--image", str(inputs["image"]),
           "--audio", str(inputs["audio"]), "--poses", str(inputs["poses"]), "--out", str(out)] + common(a)
    if a.device:
        cmd += ["--device", a.device]
    if a.dtype:
        cmd += ["--dtype", a.dtype]
    if "--quiet" in flags:
        cmd.append("--quiet")
    if "--threads" in flags and a.threads:
        cmd += ["--threads", str(a.threads)]
    if "--profile-json" in flags:
        cmd += ["--profile-json", str(profile)]
    cmd += shlex.split(extra)
    r = run_process(cmd, env, work / f"{name}.log", a.timeout)
    r.update(name=name, mp4=str(out), cmd=" ".join(shlex.quote(c) for c in cmd))
    if r["rc"] != 0 or not out.is_file():
        r["error"] = f"{name} run failed (rc {r['rc']}); log {r['log']}:\n{tail(r['log'])}"
        return r
    if profile.is_file():
        info = json.loads(profile.read_text())
        r["phases"] = info.get("phases") or {}
        r["frames"] = info.get("frames")
        r["profile_total"] = info.get("total")
        r["peak_cuda_mb"] = next((v for k, v in info.items() if "cuda" in k.lower() and isinstance(v, (int, float))),
                                 None)
        r["other"] = r["wall"] - sum(v for v in map_phases(r["phases"]).values())
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-src", required=True, metavar="DIR", help="local checkout of antgroup/echomimic_v2")
    ap.add_argument("--size", choices=("tiny", "medium", "full"), default="medium",
                    help="random-weight model preset (bench/_bench_models.py)")
    ap.add_argument("--models", default=None, metavar="DIR", help="use this official-layout folder instead")
    ap.add_argument("--work-dir", default=None, help="inputs, models and outputs (default: a folder in /tmp)")
    ap.add_argument("--image", default=None)
    ap.add_argument("--audio", default=None)
    ap.add_argument("--poses", default=None, help="official pose folder of N.npy (looped to --frames)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--cfg", type=float, default=2.5)
    ap.add_argument("--seed", type=int, default=3407)
    ap.add_argument("--context-frames", type=int, default=12)
    ap.add_argument("--context-overlap", type=int, default=3)
    ap.add_argument("--preset", choices=("normal", "acc"), default="normal")
    ap.add_argument("--device", default=None, help="both sides (default: each picks cuda if available)")
    ap.add_argument("--build-device", default=None, help="where to build the random networks (default --device)")
    ap.add_argument("--dtype", default=None, choices=("float32", "float16"))
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/MKL threads for both sides (default: OMP_NUM_THREADS, else 1)")
    ap.add_argument("--variant", action="append", default=[], metavar='NAME="FLAGS"',
                    help="another run of ours with extra generate flags, e.g. fast=\"--window-batch 4\"")
    ap.add_argument("--skip-official", action="store_true", help="reuse the official result in --work-dir")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if not (Path(a.official_src) / "src" / "pipelines" / "pipeline_echomimicv2.py").is_file():
        print(f"error: --official-src {a.official_src} is not an antgroup/echomimic_v2 checkout", file=sys.stderr)
        return 2
    a.threads = a.threads or int(os.environ.get("OMP_NUM_THREADS", "1"))
    work = Path(a.work_dir or f"/tmp/echomimic_vs_official_{a.size}")
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])

    inputs = prepare_inputs(a, work)
    models = build_models(a, work, env)
    flags = generate_flags(a.python, env)
    print(f"ours: generate flags detected: profile-json {'yes' if '--profile-json' in flags else 'no'}, "
          f"threads {'yes' if '--threads' in flags else 'no'}", flush=True)

    runs = []
    official_cache = work / "official_run.json"
    if a.skip_official and official_cache.is_file():
        runs.append(json.loads(official_cache.read_text()))
    else:
        print("running the official pipeline ...", flush=True)
        runs.append(run_official(a, models, inputs, work, env))
        official_cache.write_text(json.dumps(runs[0], indent=1) + "\n")
    variants = [("ours", "")] + [tuple(v.split("=", 1)) if "=" in v else (v, "") for v in a.variant]
    for name, extra in variants:
        print(f"running {name} ...", flush=True)
        runs.append(run_ours(a, name, extra, models, inputs, work, env, flags))

    official = runs[0]
    ref_frames = read_mp4_frames(official["mp4"]) if "error" not in official else None
    for r in runs[1:]:
        if "error" not in r and ref_frames is not None:
            r["agreement"] = agreement(read_mp4_frames(r["mp4"]), ref_frames)
            r.setdefault("frames", r["agreement"]["frames"][0])
    errors = [r for r in runs if "error" in r]
    good = [r for r in runs if "error" not in r]
    title = (f"official vs ours: {a.size if not a.models else a.models} random-weight model, {a.width}x{a.height}, "
             f"{a.frames} frames, {a.steps} steps, cfg {a.cfg:g}, context {a.context_frames}/{a.context_overlap}, "
             f"seed {a.seed}, preset {a.preset}, device {a.device or 'auto'}, dtype {a.dtype or 'auto'}, "
             f"{a.threads} thread(s)")
    if good:
        print()
        print(table(good, title))
        if official.get("shims"):
            print(f"official run-time shims: {', '.join(official['shims'])}")
    for r in errors:
        print(f"\n{r['error']}", file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps({"title": title, "runs": runs}, indent=1) + "\n")
    if errors:
        return 1
    below = [r["name"] for r in runs[1:] if r.get("agreement", {}).get("block_psnr", 0) < 30.0 and r["name"] == "ours"]
    return 3 if below else 0


if __name__ == "__main__":
    raise SystemExit(main())
