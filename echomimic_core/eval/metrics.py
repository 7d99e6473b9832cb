"""The evaluator: which metrics, their inputs, per-clip rows and set-level distances.

Per clip (averaged over frames, then the clip means averaged over clips): PSNR, SSIM, LPIPS (paired
frames pred vs ref), CSIM (reference image vs generated frames), Sync-C / Sync-D (generated frames
vs the speech), HKC / HKV (generated frames). Over the whole set (one Gaussian per side): FID
(Inception pool3 of every frame), FVD (I3D logits of every non-overlapping 16-frame window), E-FID
(expression coefficients of every frame with a face).

Protocol choices, all recorded in the result's ``protocol``: prediction and reference must have the
same frame size (``resize=True`` resizes predictions to the reference size); frame counts may differ
and are trimmed to the shorter clip (``trim=False`` makes that an error); the reference image for
CSIM is the reference clip's frame 0 (EMTD protocol: the generation starts from that frame) unless
``ref_images`` names one per clip; the speech for Sync-C/D is the prediction's audio track, else the
reference's.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..errors import InputError
from .backbones import METRIC_BACKBONES, files_for, load_backbone
from .clips import Clip, check_pair, iter_windows, resize_frames

PAPER_METRICS = ("fid", "fvd", "ssim", "psnr", "efid", "sync_d", "sync_c", "hkc", "hkv", "csim")
"""Table 2 of the EchoMimicV2 paper, in its column order."""
ALL_METRICS = PAPER_METRICS + ("lpips",)
DEFAULT_METRICS = ("psnr", "ssim")
SET_METRICS = ("fid", "fvd", "efid")
POSE_METRICS = ("csim", "efid", "sync_c", "sync_d", "hkc", "hkv")
LOWER_IS_BETTER = {"fid", "fvd", "efid", "sync_d", "lpips"}
LABELS = {"fid": "FID", "fvd": "FVD", "ssim": "SSIM", "psnr": "PSNR", "efid": "E-FID", "sync_d": "Sync-D",
          "sync_c": "Sync-C", "hkc": "HKC", "hkv": "HKV", "csim": "CSIM", "lpips": "LPIPS"}
FVD_FRAMES = 16
EFID_MARGIN = 0.25


def parse_metrics(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"paper"``, ``"all"``, ``"psnr,ssim"`` or a list -> metric names (paper order), checked."""
    if spec is None:
        return DEFAULT_METRICS
    items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        key = item.strip().lower().replace("-", "_")
        group = {"paper": PAPER_METRICS, "all": ALL_METRICS}.get(key, (key,))
        for m in group:
            if m not in ALL_METRICS:
                raise InputError(f"unknown metric {item!r}; choose from {', '.join(ALL_METRICS)}, 'paper' or 'all'")
            if m not in out:
                out.append(m)
    return tuple(m for m in ALL_METRICS if m in out)


def make_pose_extractor(pose: str | Callable | None, dwpose_dir=None, weights_dir=None) -> Callable:
    """A frame -> frame-dict callable: a given callable, ``"dwpose"`` (local onnx files) or ``"mediapipe"``."""
    if callable(pose):
        return pose
    name = (pose or "dwpose").lower()
    if name == "dwpose":
        from ..pose import DWPoseExtractor

        return DWPoseExtractor(model_dir=dwpose_dir or weights_dir or os.environ.get("ECHOMIMIC_EVAL_WEIGHTS"))
    if name == "mediapipe":
        from ..pose import MediaPipeExtractor

        return MediaPipeExtractor(static_image_mode=False)
    raise InputError(f"unknown pose backend {pose!r}; use dwpose or mediapipe")


def _float01(frames: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0


class Evaluator:
    """Reusable scorer (backbones load once): ``Evaluator(metrics, ...).evaluate(pairs) -> dict``.

    ``pairs``: ``(pred, ref)`` :class:`~.clips.Clip` pairs (:func:`.clips.pair_clips`). ``weights_dir`` /
    ``weights`` (``{kind: path}``) locate backbone files; ``backbones`` (``{kind: model}``) passes
    networks directly (the trainer's validation, tests). ``pose``: ``"dwpose"`` / ``"mediapipe"`` /
    a callable. Every needed file is checked in the constructor, before any video is read.
    """

    def __init__(self, metrics=DEFAULT_METRICS, weights_dir=None, weights: Mapping[str, str] | None = None,
                 backbones: Mapping[str, object] | None = None, pose=None, dwpose_dir=None, device=None,
                 fvd_frames: int = FVD_FRAMES, frame_stride: int = 1, trim: bool = True, resize: bool = False,
                 ref_images: Mapping[str, np.ndarray] | None = None, batch: int = 8,
                 max_frames: int | None = None):
        self.metrics = parse_metrics(metrics)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.nets = dict(backbones or {})
        self.files: dict[str, os.PathLike] = {}
        for m in self.metrics:
            kinds = METRIC_BACKBONES.get(m, ())
            model_kind = "lpips" if m == "lpips" else (kinds[0] if kinds else None)
            if model_kind and model_kind not in self.nets:
                self.files.update(files_for(m, weights_dir, weights))
        self.pose = make_pose_extractor(pose, dwpose_dir, weights_dir) if set(self.metrics) & set(POSE_METRICS) else None
        self.fvd_frames, self.frame_stride = int(fvd_frames), max(1, int(frame_stride))
        self.trim, self.resize, self.batch = trim, resize, max(1, int(batch))
        self.max_frames = int(max_frames) if max_frames else None
        self.ref_images = dict(ref_images or {})
        self.test_backbones = any("ForTests" in type(n).__name__ or getattr(n, "for_tests", False)
                                  for n in self.nets.values())

    # ------------------------------------------------------------------ backbones
    def net(self, kind: str):
        if kind not in self.nets:
            self.nets[kind] = load_backbone(kind, self.files, self.device)
        net = self.nets[kind]
        if isinstance(net, torch.nn.Module):
            net.to(self.device).eval()
        return net

    @torch.no_grad()
    def _batched(self, fn, x: np.ndarray) -> np.ndarray:
        out = [fn(x[s:s + self.batch]).float().cpu().numpy() for s in range(0, len(x), self.batch)]
        return np.concatenate(out) if out else np.zeros((0, 0))

    def inception_features(self, frames: np.ndarray) -> np.ndarray:
        net = self.net("inception")
        return self._batched(lambda f: net(_float01(f, self.device)), frames[::self.frame_stride])

    def i3d_features(self, frames: np.ndarray) -> np.ndarray:
        from .i3d import preprocess_videos

        net = self.net("i3d")
        wins = [frames[s] for s in iter_windows(len(frames), self.fvd_frames)]
        feats = []
        with torch.no_grad():
            for w in wins:
                x = torch.from_numpy(np.ascontiguousarray(w)).to(self.device).float()[None] / 255.0
                feats.append(net(preprocess_videos(x)).float().cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, 0))

    def expression_features(self, frames: np.ndarray, faces: list) -> np.ndarray:
        from .deep3d import INPUT_SIZE
        from .face import align_face, five_points

        crops = [align_face(f, five_points(p), INPUT_SIZE, EFID_MARGIN) for f, p in zip(frames, faces) if p is not None]
        if not crops:
            return np.zeros((0, 0))
        net = self.net("deep3d")
        return self._batched(lambda c: net.expression(_float01(c, self.device)), np.stack(crops))

    def lpips_frames(self, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
        net = self.net("lpips")
        out = []
        with torch.no_grad():
            for s in range(0, len(pred), self.batch):
                a = _float01(pred[s:s + self.batch], self.device) * 2 - 1
                b = _float01(ref[s:s + self.batch], self.device) * 2 - 1
                out.append(net(a, b).float().cpu().numpy())
        return np.concatenate(out)

    # ------------------------------------------------------------------ one clip
    def _faces(self, frames: np.ndarray, dets: list[dict]) -> list:
        from .face import face_points

        h, w = frames.shape[1:3]
        return [face_points(d, w, h) for d in dets]

    def score_clip(self, pred: Clip, ref: Clip, sets: dict[str, list]) -> dict:
        """One row of per-clip values; set-level features are appended to ``sets``."""
        m = self.metrics
        p, r = pred.frames(self.max_frames), ref.frames(self.max_frames)
        if self.resize and p.shape[1:3] != r.shape[1:3]:
            p = resize_frames(p, r.shape[1], r.shape[2])
        p, r = check_pair(p, r, pred.name, self.trim)
        row: dict = {"frames": int(len(p)), "size": [int(p.shape[2]), int(p.shape[1])]}
        if "psnr" in m or "ssim" in m:
            from .pixel import psnr_frames, ssim_frames

            if "psnr" in m:
                row["psnr"] = float(np.mean(psnr_frames(p, r, self.device)))
            if "ssim" in m:
                row["ssim"] = float(np.mean(ssim_frames(p, r, self.device)))
        if "lpips" in m:
            row["lpips"] = float(np.mean(self.lpips_frames(p, r)))
        if "fid" in m:
            sets["fid_pred"].append(self.inception_features(p))
            sets["fid_ref"].append(self.inception_features(r))
        if "fvd" in m:
            sets["fvd_pred"].append(self.i3d_features(p))
            sets["fvd_ref"].append(self.i3d_features(r))
        if self.pose is None:
            return row
        det_p = [self.pose(f) for f in p]
        faces_p = self._faces(p, det_p)
        row["face_frames"] = int(sum(f is not None for f in faces_p))
        if "efid" in m:
            faces_r = self._faces(r, [self.pose(f) for f in r])
            sets["efid_pred"].append(self.expression_features(p, faces_p))
            sets["efid_ref"].append(self.expression_features(r, faces_r))
        if "csim" in m:
            row["csim"] = self._csim(pred.name, r[0], p, faces_p)
        if "sync_c" in m or "sync_d" in m:
            row.update(self._sync(pred, ref, p, faces_p))
        if "hkc" in m or "hkv" in m:
            from .hands import hand_arrays, hkc, hkv

            pos, conf = hand_arrays(det_p, p.shape[2], p.shape[1])
            if "hkc" in m:
                row["hkc"] = hkc(conf)
            if "hkv" in m:
                row["hkv"] = hkv(pos, conf)
        return row

    def _csim(self, name: str, ref_frame: np.ndarray, frames: np.ndarray, faces: list) -> float:
        from .face import align_face, csim, face_points, five_points

        image = self.ref_images.get(name, ref_frame)
        ref_face = face_points(self.pose(image), image.shape[1], image.shape[0])
        if ref_face is None:
            raise InputError(f"clip {name!r}: no face found in the reference image (CSIM needs one)")
        net = self.net("arcface")
        size = getattr(net, "size", 112)
        ref_emb = net.embed(align_face(image, five_points(ref_face), size)[None])[0]
        crops = [align_face(f, five_points(q), size) for f, q in zip(frames, faces) if q is not None]
        return csim(ref_emb, net.embed(np.stack(crops))) if crops else float("nan")

    def _sync(self, pred: Clip, ref: Clip, frames: np.ndarray, faces: list) -> dict:
        from .syncnet import evaluate_sync, face_crops, resample_indices

        source = pred if pred.audio is not None else ref
        audio = source.audio_16k()
        idx = resample_indices(len(frames), pred.fps)
        if not any(faces[i] is not None for i in idx):
            return {"sync_c": float("nan"), "sync_d": float("nan")}
        crops = face_crops(frames[idx][..., ::-1], [faces[i] for i in idx])  # syncnet_python reads BGR
        s = evaluate_sync(self.net("syncnet"), crops, audio, device=self.device)
        return {"sync_c": s["sync_c"], "sync_d": s["sync_d"], "sync_offset": s["offset"]}

    # ------------------------------------------------------------------ the set
    def evaluate(self, pairs: Iterable[tuple[Clip, Clip]], progress: Callable[[int, str], None] | None = None) -> dict:
        from .frechet import frechet_from_features

        sets: dict[str, list] = {f"{k}_{s}": [] for k in SET_METRICS for s in ("pred", "ref")}
        clips: dict[str, dict] = {}
        for i, (pred, ref) in enumerate(pairs):
            try:
                clips[pred.name] = self.score_clip(pred, ref, sets)
            finally:
                pred.release(), ref.release()
            if progress is not None:
                progress(i, pred.name)
        if not clips:
            raise InputError("no clip pairs to evaluate")
        set_values: dict[str, float] = {}
        for k in SET_METRICS:
            if k in self.metrics:
                fp = [f for f in sets[f"{k}_pred"] if f.size]
                fr = [f for f in sets[f"{k}_ref"] if f.size]
                if sum(len(f) for f in fp) < 2 or sum(len(f) for f in fr) < 2:
                    hint = f" (FVD uses {self.fvd_frames}-frame windows)" if k == "fvd" else ""
                    raise InputError(f"{LABELS[k]} needs at least 2 feature samples per side{hint}; "
                                     "the clips are too short or have no faces")
                set_values[k] = frechet_from_features(np.concatenate(fp), np.concatenate(fr), LABELS[k])
        summary = {}
        for k in self.metrics:
            if k in set_values:
                summary[k] = set_values[k]
            else:
                vals = [row[k] for row in clips.values() if k in row and not math.isnan(row[k])]
                summary[k] = float(np.mean(vals)) if vals else float("nan")
        return {"metrics": list(self.metrics), "summary": summary, "clips": clips, "set": set_values,
                "protocol": self.protocol(), "test_backbones": self.test_backbones}

    def protocol(self) -> dict:
        return {"max_frames": self.max_frames, "trim_to_shorter": self.trim, "resize_pred": self.resize, "fvd_frames": self.fvd_frames,
                "frame_stride_fid": self.frame_stride, "device": str(self.device),
                "files": {k: os.path.basename(str(v)) for k, v in self.files.items()},
                "pose": type(self.pose).__name__ if self.pose is not None else None}


def evaluate(pred, ref, metrics=DEFAULT_METRICS, allow_unpaired: bool = False, **kwargs) -> dict:
    """Score predictions against references. ``pred``/``ref``: a clip or a folder of clips (paths), or
    lists of :class:`~.clips.Clip` paired by position. Other arguments: :class:`Evaluator`."""
    from .clips import pair_clips

    if isinstance(pred, (list, tuple)):
        if len(pred) != len(ref):
            raise InputError(f"{len(pred)} predictions but {len(ref)} references")
        pairs = list(zip(pred, ref))
    else:
        pairs = pair_clips(pred, ref, strict=not allow_unpaired)
    return Evaluator(metrics, **kwargs).evaluate(pairs)
