"""Watching a run: validation renders every N steps and optional TensorBoard logging (`validation`,
`run.tensorboard`). `RUN/log.csv` is written by the trainer regardless.

Validation (main process only; the others wait): a short clip from FIXED inputs — frame
`validation.reference_frame` of one clip as the reference, that clip's cached whisper windows and its
keypoints drawn with the phase's pose drawer — rendered with the library's sampler
(`echomimic_core.pipeline.EchoMimicPipeline`) on the training networks, with the EMA weights swapped
in when EMA is on. Written to `RUN/validation/step_XXXXXXXX.mp4` and `.png` (reference | frames |
pose maps), and to TensorBoard when that is on. Phases with muted audio still render with the audio
attention as it stands (frozen there).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch

from train import data as D
from train import modeling as M

VALIDATION_DEFAULTS = {"every": 0, "clip": None, "reference_frame": 0, "frames": 12, "steps": 6,
                       "guidance": 2.0, "seed": 0, "use_ema": True, "at_end": True}


def render_clip(pipe, reference: np.ndarray, audio: np.ndarray, poses: np.ndarray, *, size: int, steps: int,
                guidance: float, seed: int) -> torch.Tensor:
    """The one call into the library's sampler (kept alone so a change of `generate`'s signature is a
    one-place edit). reference uint8 [S, S, 3], audio [F, tokens, 384], poses uint8 [F, S, S, 3] →
    float32 frames [F, 3, S, S] in [0, 1]."""
    frames = len(poses)
    result = pipe.generate(reference, torch.from_numpy(np.asarray(audio, dtype=np.float32)), poses,
                           width=size, height=size, num_frames=frames, steps=steps, guidance_scale=guidance,
                           seed=seed, context_frames=min(12, frames), context_overlap=min(3, max(0, frames - 1) // 2))
    return result.frames


class Monitor:
    """Created by the trainer at the start of `train()`; `on_step(row)` after every optimizer step."""

    def __init__(self, trainer):
        self.tr = trainer
        cfg = trainer.cfg
        self.vcfg = dict(VALIDATION_DEFAULTS, **(cfg.get("validation") or {}))
        self.dir = trainer.out / "validation"
        self.tb = None
        if cfg["run"].get("tensorboard") and trainer.acc.is_main_process:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard is optional
                raise ImportError("run.tensorboard: true needs the tensorboard package (pip install tensorboard); "
                                  "log.csv is written without it") from e
            self.tb = SummaryWriter(str(trainer.out / "tensorboard"), purge_step=trainer.state.step + 1)
        self._inputs = None
        if int(self.vcfg["every"] or 0) > 0 and trainer.acc.is_main_process:
            self.inputs()  # bad validation inputs fail now, not N steps into the run

    # -- per step ---------------------------------------------------------------------------------
    def on_step(self, row: dict, last: bool = False) -> None:
        step = int(row["step"])
        if self.tb is not None:
            for k in ("loss", "latent", "pose", "detail", "lpips", "grad_norm"):
                if row.get(k) is not None:
                    self.tb.add_scalar(f"train/{k}", float(row[k]), step)
            self.tb.add_scalar("train/lr", float(row["lr"]), step)
            self.tb.add_scalar("train/samples_per_sec", float(row["samples_per_sec"]), step)
        every = int(self.vcfg["every"] or 0)
        if every > 0 and (step % every == 0 or (last and self.vcfg["at_end"])):
            self.validate(step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    # -- validation ---------------------------------------------------------------------------------
    def inputs(self):
        """(reference uint8 [S,S,3], audio [F,tokens,384], poses uint8 [F,S,S,3]) — fixed for the run."""
        if self._inputs is None:
            tr, v = self.tr, self.vcfg
            size = int(tr.cfg["data"]["resolution"])
            if v["clip"]:
                want = Path(v["clip"])
                found = D.list_clips([want.parent.parent]) if (want / "meta.json").is_file() else []
                match = [c for c in found if c.path.resolve() == want.resolve()]
                if not match:
                    raise FileNotFoundError(f"validation.clip {v['clip']}: not a clip folder of a dataset "
                                            "(DATASET/clips/<id>)")
                clip = match[0]
            else:
                clip = tr.dataset.clips[0]
            n = min(int(v["frames"]), clip.num_frames)
            reference = D.load_frame(clip, int(v["reference_frame"]) % clip.num_frames, size)
            kp = tr.dataset.keypoints(clip)
            poses = np.stack([D.draw_pose(kp, i, size, tr.dataset.pose_parts) for i in range(n)])
            audio = np.asarray(tr.dataset.audio_windows(clip)[:n], dtype=np.float32)
            self._inputs = (reference, audio, poses, clip)
        return self._inputs[:3]

    @contextlib.contextmanager
    def _weights(self):
        """The training weights, with the EMA shadow swapped in (and restored after) when EMA is on."""
        tr = self.tr
        ema = tr.ema if (tr.ema is not None and self.vcfg["use_ema"]) else None
        named = tr._named_trainable() if ema is not None else {}
        saved = {k: p.detach().clone() for k, p in named.items()}
        try:
            with torch.no_grad():
                for k, p in named.items():
                    p.copy_(ema.shadow[k].to(p.dtype))
            yield
        finally:
            with torch.no_grad():
                for k, p in named.items():
                    p.copy_(saved[k])

    def validate(self, step: int) -> Path | None:
        tr = self.tr
        tr.acc.wait_for_everyone()
        path = None
        if tr.acc.is_main_process:
            from echomimic_core.models import reference_pairing
            from echomimic_core.pipeline import EchoMimicPipeline

            net = M.unwrap(tr.net)
            reference, audio, poses = self.inputs()
            was_training = net.training
            net.eval()
            try:
                with self._weights():
                    pipe = EchoMimicPipeline(tr.vae, net.reference_unet, net.denoising_unet, net.pose_encoder,
                                             tr.models.scheduler_kwargs,
                                             reference_pairing=reference_pairing(net.reference_unet,
                                                                                 net.denoising_unet))
                    v = self.vcfg
                    frames = render_clip(pipe, reference, audio, poses, size=reference.shape[0], steps=int(v["steps"]),
                                         guidance=float(v["guidance"]), seed=int(v["seed"]))
            finally:
                net.train(was_training)
            path = self._write(step, frames, reference, poses)
        tr.acc.wait_for_everyone()
        return path

    def _write(self, step: int, frames: torch.Tensor, reference: np.ndarray, poses: np.ndarray) -> Path:
        import cv2

        from echomimic_core.video import VideoWriter

        self.dir.mkdir(parents=True, exist_ok=True)
        stem = self.dir / f"step_{step:08d}"
        with VideoWriter(stem.with_suffix(".mp4"), fps=24) as w:
            w.write(frames)
        gen = (frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        strip = np.concatenate([np.concatenate([reference, np.zeros_like(reference)], 0)]
                               + [np.concatenate([g, p], 0) for g, p in zip(gen, poses)], 1)
        cv2.imwrite(str(stem.with_suffix(".png")), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        (self.dir / "inputs.json").write_text(json.dumps({
            "clip": str(self._inputs[3].path), "frames": len(poses), "reference_frame": self.vcfg["reference_frame"],
            "steps": self.vcfg["steps"], "guidance": self.vcfg["guidance"], "seed": self.vcfg["seed"],
            "ema": self.tr.ema is not None and bool(self.vcfg["use_ema"])}, indent=1))
        if self.tb is not None:
            self.tb.add_images("validation/frames", frames, step)
            self.tb.flush()
        return stem.with_suffix(".mp4")
