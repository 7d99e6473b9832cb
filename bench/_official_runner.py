"""Run the OFFICIAL EchoMimicV2 inference (antgroup/echomimic_v2, a local checkout) once, with phase timers.

Started by ``bench/vs_official.py`` in its own process. This file contains no official code: it imports the
official modules from ``--official-src`` and drives them the way ``infer.py`` / ``infer_acc.py`` do
(same model construction and loading calls, same pose drawing loop, same pipeline call, ``save_videos_grid``),
with these documented differences, none of which touches the numbers:

* Paths and settings come from the command line instead of ``configs/prompts/*.yaml``; the
  ``inference_config.json`` of the model folder stands in for ``configs/inference/inference_v2.yaml``
  (same keys), and the PoseEncoder channel sizes are read from ``pose_encoder.pth`` (infer.py hard-codes
  the full-size (320, 3, (16, 32, 96, 256)); the benchmark's smaller presets need the file's).
* Pose ``draw_pose_params`` are 768-based in the official demo files and infer.py only works at that size;
  for other sizes they are scaled by H/768, W/768 (shared POSE.md), identity at 768.
* Audio muxing: infer.py re-encodes with moviepy, which is not installed here; the silent mp4 that the
  official ``save_videos_grid`` writes is muxed with the audio by PyAV (stream copy + AAC), so the official
  "write" time is a lower bound.
* Run-time shims, never edits of the checkout: ``_official_shims/`` stands in for ``ffmpeg-python`` and
  ``torchvision`` when those cannot be imported (README there; visible only while the two official modules
  that import them load); on a machine without CUDA the ``device``
  default of ``ReferenceAttentionControl.register_reference_hooks`` (``cuda``, used only to build the CFG
  mask) is set to the run's device, the one patch the fixtures were made with.

Phases (seconds, CUDA-synchronised at the boundaries): import, load, poses (drawing + PoseEncoder),
audio (whisper features + chunks), reference (VAE encode + ReferenceNet), denoise (the rest of the pipeline
call), decode, write. The result JSON also has peak CUDA memory and the frame count; the uint8 frames
exactly as encoded go to ``--frames-out`` (not timed).
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

SHIMS = Path(__file__).resolve().parent / "_official_shims"


class Phases:
    def __init__(self, device):
        self.seconds: dict = {}
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def add(self, name, dt):
        self.seconds[name] = self.seconds.get(name, 0.0) + dt

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            self.sync()
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.add(name, time.perf_counter() - t)
        return timed

    def hook(self, name, module):
        start = {}

        def pre(_m, _inputs):
            self.sync()
            start["t"] = time.perf_counter()

        def post(_m, _inputs, _output):
            self.sync()
            self.add(name, time.perf_counter() - start.pop("t"))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # a broken install (e.g. a CUDA torchvision next to a CPU torch) counts as missing
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return False


@contextlib.contextmanager
def stand_ins(names=("ffmpeg", "torchvision")):
    """Make the stand-ins of the missing packages importable for the ``with`` block only.

    They go into ``sys.modules`` just while the official modules that need them are imported (those keep
    their reference), and are removed again, so other libraries' availability checks (transformers looks
    for torchvision) never see them.
    """
    import importlib.util

    used, added = [], []
    for name in names:
        if _importable(name):
            continue
        used.append(name)
        pkg = SHIMS / name
        spec = importlib.util.spec_from_file_location(name, pkg / "__init__.py", submodule_search_locations=[str(pkg)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        added.append(name)
        spec.loader.exec_module(module)
        added += [k for k in sys.modules if k.startswith(name + ".")]
    try:
        yield used
    finally:
        for key in added:
            sys.modules.pop(key, None)


def cpu_reference_mask_shim(device) -> bool:
    """register_reference_hooks(..., device=torch.device("cuda")): the CFG mask's device default."""
    if device.type == "cuda":
        return False
    from src.models.mutual_self_attention import ReferenceAttentionControl

    func = ReferenceAttentionControl.register_reference_hooks
    code = func.__code__
    names = code.co_varnames[:code.co_argcount]
    defaults = list(func.__defaults__)
    defaults[names.index("device") - (len(names) - len(defaults))] = device
    func.__defaults__ = tuple(defaults)
    return True


def pose_encoder_kwargs(state: dict) -> dict:
    """PoseEncoder(conditioning_embedding_channels, conditioning_channels, block_out_channels) from its weights."""
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    chans = [state["conv_in.weight"].shape[0]] + [state[f"blocks.{i}.weight"].shape[0] for i in range(1, n_blocks, 2)]
    return {"conditioning_embedding_channels": state["conv_out.weight"].shape[0],
            "conditioning_channels": state["conv_in.weight"].shape[1], "block_out_channels": tuple(chans)}


def scaled_draw_params(params, height: int, width: int, base: int = 768):
    """768-based draw_pose_params for an H x W output (shared POSE.md); identity at 768 x 768."""
    imh, imw, rb, re, cb, ce = (int(v) for v in params)
    if (height, width) == (base, base):
        return imh, imw, rb, re, cb, ce
    rb, re = round(rb * height / base), round(re * height / base)
    cb, ce = round(cb * width / base), round(ce * width / base)
    re, ce = min(max(re, rb + 1), height), min(max(ce, cb + 1), width)
    rb, cb = min(rb, re - 1), min(cb, ce - 1)
    return re - rb, ce - cb, rb, re, cb, ce


def audio_seconds(path) -> float:
    import av

    with av.open(str(path)) as container:
        n = 0
        rate = container.streams.audio[0].sample_rate
        for frame in container.decode(audio=0):
            n += frame.samples
    return n / rate


def mux_audio(silent_mp4: Path, audio: Path, seconds: float, out: Path) -> None:
    """Silent h264 mp4 + audio cut to ``seconds`` -> ``out`` (video stream copied, audio to AAC)."""
    import av
    import numpy as np

    with av.open(str(audio)) as src:
        rate = src.streams.audio[0].sample_rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        chunks = []
        for frame in src.decode(audio=0):
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    samples = np.concatenate(chunks, axis=1)[:, : int(round(seconds * rate))]
    with av.open(str(silent_mp4)) as vin, av.open(str(out), "w") as dst:
        vstream = vin.streams.video[0]
        vout = dst.add_stream_from_template(vstream)
        aout = dst.add_stream("aac", rate=rate)
        for packet in vin.demux(vstream):
            if packet.dts is None:
                continue
            packet.stream = vout
            dst.mux(packet)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.astype(np.float32)), format="fltp",
                                           layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        frame.time_base = Fraction(1, rate)
        for packet in aout.encode(frame):
            dst.mux(packet)
        for packet in aout.encode(None):
            dst.mux(packet)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official-src", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--poses", required=True, help="official pose folder of N.npy")
    ap.add_argument("--out", required=True)
    ap.add_argument("--result", required=True, help="JSON with phases etc.")
    ap.add_argument("--frames-out", default=None, help="uint8 [F, H, W, 3] .npy of the frames as encoded")
    ap.add_argument("--preset", choices=("normal", "acc"), default="normal")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--cfg", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--max-frames", type=int, default=None, help="infer.py -L (default 240)")
    ap.add_argument("--context-frames", type=int, default=12)
    ap.add_argument("--context-overlap", type=int, default=3)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=("float32", "float16"), default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)

    src = Path(a.official_src).resolve()
    if not (src / "src" / "pipelines" / "pipeline_echomimicv2.py").is_file():
        print(f"error: {src} is not an antgroup/echomimic_v2 checkout (no src/pipelines/pipeline_echomimicv2.py)",
              file=sys.stderr)
        return 2
    import numpy as np
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, a.dtype or ("float16" if device.type == "cuda" else "float32"))
    acc = a.preset == "acc"
    steps = a.steps or (6 if acc else 30)
    cfg = a.cfg if a.cfg is not None else (1.0 if acc else 2.5)
    seed = a.seed if a.seed is not None else (420 if acc else 3407)
    phases = Phases(device)
    sys.path.insert(0, str(src))

    t = time.perf_counter()
    from diffusers import AutoencoderKL, DDIMScheduler
    from PIL import Image

    from src.models.pose_encoder import PoseEncoder
    from src.models.unet_2d_condition import UNet2DConditionModel
    from src.models.unet_3d_emo import EMOUNet3DConditionModel
    from src.utils.dwpose_util import draw_pose_select_v2
    if acc:
        from src.pipelines.pipeline_echomimicv2_acc import EchoMimicV2Pipeline
    else:
        from src.pipelines.pipeline_echomimicv2 import EchoMimicV2Pipeline
    with stand_ins() as shims:
        from src.models.whisper.audio2feature import load_audio_model
        from src.utils.util import save_videos_grid
    if cpu_reference_mask_shim(device):
        shims.append("register_reference_hooks device default")
    phases.add("import", time.perf_counter() - T_START)  # interpreter start-up excluded, torch import included

    # ---- models, as infer.py / infer_acc.py build and load them
    t = time.perf_counter()
    models = Path(a.models)
    base = models / "sd-image-variations-diffusers"
    infer_config = json.loads((models / "inference_config.json").read_text())
    den_name, mm_name = ("denoising_unet_acc.pth", "motion_module_acc.pth") if acc else \
        ("denoising_unet.pth", "motion_module.pth")
    vae = AutoencoderKL.from_pretrained(str(models / "sd-vae-ft-mse")).to(device, dtype=dtype)
    reference_unet = UNet2DConditionModel.from_pretrained(str(base), subfolder="unet").to(dtype=dtype, device=device)
    reference_unet.load_state_dict(torch.load(models / "reference_unet.pth", map_location="cpu", weights_only=True))
    denoising_unet = EMOUNet3DConditionModel.from_pretrained_2d(
        str(base), str(models / mm_name), subfolder="unet",
        unet_additional_kwargs=infer_config["unet_additional_kwargs"]).to(dtype=dtype, device=device)
    denoising_unet.load_state_dict(torch.load(models / den_name, map_location="cpu", weights_only=True), strict=False)
    pose_state = torch.load(models / "pose_encoder.pth", map_location="cpu", weights_only=True)
    pose_net = PoseEncoder(**pose_encoder_kwargs(pose_state)).to(dtype=dtype, device=device)
    pose_net.load_state_dict(pose_state)
    audio_processor = load_audio_model(model_path=str(models / "audio_processor" / "tiny.pt"), device=device)
    scheduler = DDIMScheduler(**infer_config["noise_scheduler_kwargs"])
    pipe = EchoMimicV2Pipeline(vae=vae, reference_unet=reference_unet, denoising_unet=denoising_unet,
                               audio_guider=audio_processor, pose_encoder=pose_net, scheduler=scheduler)
    pipe = pipe.to(device, dtype=dtype)
    phases.sync()
    phases.add("load", time.perf_counter() - t)

    # ---- timers around the official objects (instance attributes and forward hooks only)
    audio_processor.audio2feat = phases.wrap("audio", audio_processor.audio2feat)
    audio_processor.feature2chunks = phases.wrap("audio", audio_processor.feature2chunks)
    vae.encode = phases.wrap("reference", vae.encode)
    phases.hook("reference", reference_unet)
    phases.hook("poses", pose_net)
    pipe.decode_latents = phases.wrap("decode", pipe.decode_latents)

    # ---- inputs, as infer.py prepares them
    t = time.perf_counter()
    W, H, fps = a.width, a.height, a.fps
    generator = torch.manual_seed(seed)
    ref = Image.open(a.image).convert("RGB") if acc else Image.open(a.image).resize((W, H))
    L = min(a.max_frames or 240, int(audio_seconds(a.audio) * fps), len(os.listdir(a.poses)))
    pose_list = []
    for index in range(L):
        canvas = np.zeros((W, H, 3)).astype("uint8")
        detected = np.load(os.path.join(a.poses, f"{index}.npy"), allow_pickle=True).tolist()
        imh, imw, rb, re, cb, ce = scaled_draw_params(detected["draw_pose_params"], H, W)
        im = draw_pose_select_v2(detected, imh, imw, ref_w=800)
        canvas[rb:re, cb:ce, :] = np.transpose(np.array(im), (1, 2, 0))
        pil = Image.fromarray(np.array(canvas)).convert("RGB")
        pose_list.append(torch.Tensor(np.array(pil)).to(dtype=dtype, device=device).permute(2, 0, 1) / 255.0)
    poses_tensor = torch.stack(pose_list, dim=1).unsqueeze(0)
    phases.sync()
    phases.add("poses", time.perf_counter() - t)

    inner = dict(phases.seconds)
    t = time.perf_counter()
    video = pipe(ref, a.audio, poses_tensor[:, :, :L], W, H, L, steps, cfg, generator=generator,
                 audio_sample_rate=16000, context_frames=a.context_frames, fps=fps,
                 context_overlap=a.context_overlap, start_idx=0).videos
    phases.sync()
    call = time.perf_counter() - t
    inside = sum(phases.seconds.get(k, 0.0) - inner.get(k, 0.0) for k in ("audio", "reference", "poses", "decode"))
    phases.add("denoise", call - inside)

    final_length = min(video.shape[2], poses_tensor.shape[2], L)
    video_sig = video[:, :, :final_length]
    t = time.perf_counter()
    out = Path(a.out)
    silent = out.with_name(out.stem + "_woa_sig.mp4")
    save_videos_grid(video_sig, str(silent), n_rows=1, fps=fps)
    mux_audio(silent, Path(a.audio), L / fps, out)
    silent.unlink()
    phases.add("write", time.perf_counter() - t)
    total = time.perf_counter() - T_START

    t = time.perf_counter()
    if a.frames_out:
        frames = (video_sig[0].permute(1, 2, 3, 0) * 255).numpy().astype(np.uint8)  # as save_videos_grid does
        np.save(a.frames_out, frames)
    result = {"phases": phases.seconds, "total": total, "frames": int(final_length), "steps": steps, "cfg": cfg,
              "seed": seed, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "shims": shims,
              "threads": torch.get_num_threads(), "untimed": time.perf_counter() - t}
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(a.result).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
