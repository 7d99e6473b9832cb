"""Training data: deterministic sampling, masks, pose maps, audio-feature sources (the folder format
itself: train/dataset_format.py).

Every random choice of a sample (which clip, which frames, which reference frame) is a pure function
of (seed, global sample number). The global sample number of micro-batch `m` of optimizer step `s`
is `(s·accum + m)·global_batch + rank·per_device_batch + j`, so
  * resuming at step s re-creates exactly the same stream (the data position is the step), and
  * N processes with per-device batch b see the same samples as 1 process with batch N·b.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from echomimic_core.errors import ConfigError, InputError
from echomimic_core.pose.arrays import frame_from_arrays

# the format itself (constants, writers, reader) lives in train/dataset_format.py; re-exported here
from train.bad_clips import BAD_CLIP_ERRORS, BadClips, TooManyBadClips
from train.dataset_format import (FORMAT, KP_ARRAYS, Clip, _frame_path, empty_keypoints, list_clips,  # noqa: F401
                                  load_cached_audio_features, load_frame, read_wav, save_npz, write_clip,
                                  write_index, write_json_atomic, write_wav)

LIPS = list(range(48, 68))
HEAD_BODY_POINTS = (0, 14, 15, 16, 17)


# ------------------------------------------------------------------------------------------------
# seeded randomness


def seed_of(*parts) -> int:
    """A stable 63-bit seed from any printable parts (independent of PYTHONHASHSEED)."""
    h = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def rng_of(*parts) -> np.random.Generator:
    return np.random.default_rng(seed_of(*parts))


def torch_gen(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(*parts))


# ------------------------------------------------------------------------------------------------
# regions and pose dicts


def _bbox(points: np.ndarray, scores: np.ndarray, dilate: float, thr: float = 0.0) -> np.ndarray:
    ok = (points[:, 0] > 0.01) & (points[:, 1] > 0.01) & (scores > thr)
    if not ok.any():
        return np.full(4, -1.0, dtype=np.float32)
    p = points[ok]
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * dilate, (y1 - y0) / 2 * dilate
    side = max(hw, hh, 0.02)  # never a degenerate box
    hw, hh = max(hw, side * 0.5), max(hh, side * 0.5)
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], dtype=np.float32)


def default_regions(kp: dict) -> dict:
    """lips/head/hands boxes from the keypoints (normalised xyxy, -1 rows where absent)."""
    f = kp["faces"].shape[0]
    lips = np.stack([_bbox(kp["faces"][i, LIPS], kp["faces_score"][i, LIPS], 1.5) for i in range(f)])
    head = []
    for i in range(f):
        pts = np.concatenate([kp["faces"][i], kp["bodies"][i, list(HEAD_BODY_POINTS)]])
        sc = np.concatenate([kp["faces_score"][i], kp["bodies_score"][i, list(HEAD_BODY_POINTS)]])
        head.append(_bbox(pts, sc, 1.2))
    hands = np.stack([np.stack([_bbox(kp["hands"][i, h], kp["hands_score"][i, h], 1.2) for h in range(2)])
                      for i in range(f)])
    return {"lips": lips, "head": np.stack(head), "hands": hands}


def box_mask(box: np.ndarray, h: int, w: int) -> np.ndarray:
    """[4] normalised xyxy box → float32 [h, w] mask (cells whose centre is inside); -1 box → zeros."""
    m = np.zeros((h, w), dtype=np.float32)
    if box[0] < 0 and box[2] < 0:
        return m
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    m[:] = ((ys[:, None] >= box[1]) & (ys[:, None] <= box[3]) & (xs[None] >= box[0]) & (xs[None] <= box[2]))
    return m


def frame_dict(kp: dict, i: int) -> dict:
    """Frame i of keypoints.npz → one pose frame in the official dict layout (echomimic_core.pose)."""
    return frame_from_arrays(kp, i)


def draw_pose(kp: dict, i: int, size: int, parts: str) -> np.ndarray:
    """RGB uint8 [size, size, 3] pose image with the pose package's drawers.

    parts: "hands" → the inference drawer (draw_hands, hands only, exactly as at inference);
    "init" / "no_lips" / "no_head" → the full drawer with those parts."""
    from echomimic_core.pose.draw import draw_full_pose, draw_hands

    fr = frame_dict(kp, i)
    if parts == "hands":
        return draw_hands(fr, size, size)
    return draw_full_pose(fr, size, size, parts=parts)


def hue_rotation_matrix(angle: float) -> torch.Tensor:
    """3x3 rotation of RGB about the grey axis (1, 1, 1) by ``angle`` radians: a hue shift that keeps
    greys (and, up to clipping, brightness and saturation). Rodrigues' formula."""
    k = torch.full((3,), 1.0 / np.sqrt(3.0), dtype=torch.float64)
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64) * np.cos(angle) + np.sin(angle) * cross \
        + (1.0 - np.cos(angle)) * torch.outer(k, k)
    return rot.float()


def rotate_colours(images: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to images in [-1, 1] with channels first (``3 ...``), clipped to [-1, 1].
    In [-1, 1] the grey axis passes through the origin, so a rotation about it needs no offset."""
    return torch.einsum("ij,j...->i...", rot, images).clamp(-1.0, 1.0)


def training_clips(data_cfg: dict, run_dir: Path) -> tuple[list[Clip], BadClips]:
    """The clips of ``data.roots`` and the :class:`BadClips` record that the dataset goes on filling
    (``run_dir/bad_clips.jsonl``); clips with a damaged ``meta.json`` are already in it."""
    bad = BadClips(max_fraction=data_cfg["max_bad_fraction"], log_path=Path(run_dir) / "bad_clips.jsonl")
    clips = list_clips(data_cfg["roots"], data_cfg["kinds"], min_frames=max(2, data_cfg["clip_frames"]), bad_clips=bad)
    bad.num_clips = len(clips) + len(bad.reasons)
    bad.check()
    return clips, bad


class TrainDataset(Dataset):
    """Items are addressed by the global sample number n (see module docstring).

    Returns a dict of tensors:
      ref      [3, S, S]     reference frame in [-1, 1]
      target   [3, F, S, S]  target frame(s) in [-1, 1]
      pose     [3, F, S, S]  pose images in [0, 1] (drawn with `pose_parts`)
      audio    [F, N, 384]   whisper windows of the target frames
      region   [F, S, S]     partial-attention mask (lips/head ∩ content box), ones if none
      sample   int64         n
    """

    def __init__(self, clips: list[Clip], *, resolution: int, clip_frames: int = 1, frame_stride: int = 1,
                 pose_parts: str = "init", region: str | None = None, seed: int = 0,
                 audio_features: Callable[[Clip], np.ndarray] | None = None, repeat: int = 1,
                 hue_rotation: float = 0.0, min_ref_gap: int | None = None, augment: dict | None = None,
                 bad_clips: BadClips | None = None):
        if not clips:
            raise ConfigError("no usable clips (check data.roots / data.kinds and clip lengths)")
        self.clips = clips
        self.size = int(resolution)
        self.clip_frames = int(clip_frames)
        self.stride = int(frame_stride)
        self.pose_parts = pose_parts
        self.region = region
        self.seed = seed
        self.repeat = max(1, int(repeat))
        if not 0.0 <= float(hue_rotation) <= 1.0:
            raise ConfigError(f"data.hue_rotation is a probability in [0, 1], got {hue_rotation}")
        self.hue_rotation = float(hue_rotation)
        from train.augment import check_augment

        # None = the original rule (any other frame); an int = at least that many frames from every target
        self.min_ref_gap = None if min_ref_gap is None else max(0, int(min_ref_gap))
        self.augment = check_augment(augment)
        self._audio_fn = audio_features or load_cached_audio_features
        # keyed by clip folder: clip ids repeat across data roots
        self._kp_cache: dict[Path, dict] = {}
        self._reg_cache: dict[Path, dict] = {}
        self._audio_cache: dict[Path, np.ndarray] = {}
        self._videos: dict = {}  # clip folder → open frames.mp4 reader (compact clips)
        self.bad_clips = bad_clips if bad_clips is not None else BadClips(len(clips))
        if self.bad_clips.num_clips is None:
            self.bad_clips.num_clips = len(clips)

    @property
    def epoch_len(self) -> int:
        return len(self.clips) * self.repeat

    def __len__(self):  # nominal; the sampler addresses items by global sample number
        return self.epoch_len

    def _keypoints(self, clip: Clip) -> dict:
        if clip.path not in self._kp_cache:
            with np.load(clip.path / "keypoints.npz") as z:
                self._kp_cache[clip.path] = {k: z[k] for k in KP_ARRAYS}
        return self._kp_cache[clip.path]

    def _regions(self, clip: Clip) -> dict:
        if clip.path not in self._reg_cache:
            p = clip.path / "regions.npz"
            if p.is_file():
                with np.load(p) as z:
                    reg = {k: z[k] for k in z.files}
            else:
                reg = default_regions(self._keypoints(clip))
            self._reg_cache[clip.path] = reg
        return self._reg_cache[clip.path]

    def _audio(self, clip: Clip) -> np.ndarray:
        if clip.path not in self._audio_cache:
            self._audio_cache[clip.path] = self._audio_fn(clip)
        return self._audio_cache[clip.path]

    def keypoints(self, clip: Clip) -> dict:
        """The clip's keypoints.npz arrays (cached)."""
        return self._keypoints(clip)

    def audio_windows(self, clip: Clip) -> np.ndarray:
        """The clip's whisper windows [F, tokens, 384] (cached or computed per data.audio_features)."""
        return self._audio(clip)

    def locate(self, n: int) -> tuple[Clip, list[int], int]:
        """Global sample number → (clip, target frame indices, reference frame index)."""
        epoch, pos = divmod(int(n), self.epoch_len)
        perm = rng_of(self.seed, "perm", epoch).permutation(self.epoch_len)
        clip = self.clips[perm[pos] % len(self.clips)]
        rng = rng_of(self.seed, "sample", n)
        span = (self.clip_frames - 1) * self.stride + 1
        if span > clip.num_frames:
            stride = max(1, (clip.num_frames - 1) // max(1, self.clip_frames - 1))
            span = (self.clip_frames - 1) * stride + 1
            if span > clip.num_frames:
                raise InputError(f"clip {clip.path} has {clip.num_frames} frames < clip_frames {self.clip_frames}")
        else:
            stride = self.stride
        start = int(rng.integers(0, clip.num_frames - span + 1))
        frames = [start + k * stride for k in range(self.clip_frames)]
        if self.min_ref_gap is not None:
            from train.augment import reference_frame

            ref = reference_frame(rng, clip.num_frames, frames, self.min_ref_gap)
        elif clip.num_frames > 1:
            ref = int(rng.integers(0, clip.num_frames - 1))
            if self.clip_frames == 1 and ref >= frames[0]:
                ref += 1  # reference ≠ target in stage 1
        else:
            ref = 0
        return clip, frames, ref

    #: a sample whose clip is damaged is drawn again this many times before the run gives up
    MAX_REDRAWS = 16

    def __getitem__(self, n: int) -> dict:
        """Sample ``n``; when its clip cannot be read, the clip is recorded (train/bad_clips.py) and the
        sample is drawn again from the sequence n, n + E', n + 2E', ... (E' a multiple of the epoch).
        Whether a read fails depends only on the files, never on what this process saw before (a clip
        damaged in one frame still serves its other frames), so every process and every resume gets the
        same sample for n."""
        for redraw in range(self.MAX_REDRAWS):
            m = int(n) + redraw * self.epoch_len * 1_000_003
            clip = self.locate(m)[0]
            try:
                item = self._item(m)
            except BAD_CLIP_ERRORS as exc:
                self.bad_clips.record(clip.path, exc)
                continue
            item["sample"] = torch.tensor(int(n), dtype=torch.long)
            return item
        raise TooManyBadClips(f"sample {n}: {self.MAX_REDRAWS} draws in a row hit damaged clips; see the "
                              "bad_clips.jsonl of the run")

    def _item(self, n: int) -> dict:
        clip, frames, ref = self.locate(n)
        s = self.size
        to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 127.5 - 1.0  # noqa: E731
        box = None
        if self.augment["prob"] > 0:  # the seeded draw only when enabled (the default stream is unchanged)
            from train import augment as A

            box = A.crop_box(self.seed, n, self.augment)
        video = None
        if (clip.path / "frames.mp4").is_file():
            from train.clip_video import Mp4Frames

            if clip.path not in self._videos:
                while len(self._videos) >= 8:  # a few open containers per worker
                    self._videos.pop(next(iter(self._videos))).close()
                self._videos[clip.path] = Mp4Frames(clip.path / "frames.mp4", clip.fps)
            video = self._videos[clip.path]
        ref_img = to_t(load_frame(clip, ref, s, box, video))
        target = torch.stack([to_t(load_frame(clip, i, s, box, video)) for i in frames], dim=1)
        if self.hue_rotation:  # the seeded draw only when enabled: no cost on the default path
            rng = rng_of(self.seed, "hue", n)
            if rng.random() < self.hue_rotation:
                rot = hue_rotation_matrix(rng.uniform(0.0, 2.0 * np.pi))
                ref_img, target = rotate_colours(ref_img, rot), rotate_colours(target, rot)
        kp, kp_frames = self._keypoints(clip), frames
        if box is not None:  # keypoints moved into the crop, drawn at the inference line widths
            kp, kp_frames = A.crop_keypoints(kp, frames, box), list(range(len(frames)))
        pose = torch.stack([torch.from_numpy(draw_pose(kp, i, s, self.pose_parts)).permute(2, 0, 1).float() / 255.0
                            for i in kp_frames], dim=1)
        feats = self._audio(clip)
        idx = np.clip(np.asarray(frames), 0, len(feats) - 1)
        audio = torch.from_numpy(np.asarray(feats[idx], dtype=np.float32))
        content_box = np.asarray(clip.content_box, dtype=np.float32)
        if box is not None:
            content_box = A.crop_boxes(content_box, box)
        content = box_mask(content_box, s, s)
        if self.region in ("lips", "head"):
            boxes = self._regions(clip)[self.region]
            boxes = np.stack([boxes[min(i, len(boxes) - 1)] for i in frames])
            if box is not None:
                boxes = A.crop_boxes(boxes, box)
            region = np.stack([box_mask(b, s, s) * content for b in boxes])
        else:
            region = np.ones((len(frames), s, s), dtype=np.float32)
        return {"ref": ref_img, "target": target, "pose": pose, "audio": audio,
                "region": torch.from_numpy(region), "sample": torch.tensor(int(n), dtype=torch.long)}


class StepSampler(Sampler):
    """Infinite stream of global sample numbers for one process, starting at optimizer step `start_step`."""

    def __init__(self, per_device_batch: int, num_processes: int, rank: int, accum: int, start_step: int = 0,
                 fixed: bool = False):
        self.b, self.p, self.r, self.a, self.start = per_device_batch, num_processes, rank, accum, start_step
        self.fixed = fixed  # debugging/overfit: every step sees the samples of step 0 (same noise and t)

    def __iter__(self) -> Iterator[int]:
        gb = self.b * self.p
        s = self.start
        while True:
            for m in range(self.a):
                base = ((0 if self.fixed else s) * self.a + m) * gb + self.r * self.b
                yield from range(base, base + self.b)
            s += 1

    def __len__(self):  # DataLoader never needs it for an infinite stream, but keep it large
        return 1 << 62


# ------------------------------------------------------------------------------------------------
# audio features (cached in the dataset, or computed once per run)


def compute_audio_features(wav_path: Path, encoder, fps: float, num_frames: int) -> np.ndarray:
    """Whisper windows [num_frames, tokens, 384] (float16) with echomimic_core's audio path; frames past the
    audio's end reuse the last window (the clamp the inference windows use)."""
    from echomimic_core.audio import encode_audio

    feats = encode_audio(encoder, str(wav_path), fps=fps)
    chunks = feats.chunks.float().numpy()
    idx = np.clip(np.arange(num_frames), 0, len(chunks) - 1)
    return chunks[idx].astype(np.float16)


def ensure_audio_features(clips: list[Clip], mode: str, cache_dir: Path, encoder_path: str | None,
                          is_main: bool = True, wait: Callable[[], None] | None = None) -> Callable[[Clip], np.ndarray]:
    """Returns the per-clip feature source for TrainDataset.

    mode "cached": use clips' audio_features.npy (error if missing); "compute": always recompute into
    cache_dir; "auto": cached when present, else compute. Only the main process computes; the others wait."""
    if mode not in ("auto", "cached", "compute"):
        raise ConfigError("data.audio_features must be auto | cached | compute")
    todo = []
    for c in clips:
        has = (c.path / "audio_features.npy").is_file()
        if mode == "cached" and not has:
            raise FileNotFoundError(f"{c.path}/audio_features.npy missing (data.audio_features: cached): cache the "
                                    f"features with python train/features.py {c.path.parent.parent} --audio-encoder tiny.pt")
        if mode == "compute" or (mode == "auto" and not has):
            todo.append(c)
    paths = {c.path: c.path / "audio_features.npy" for c in clips}
    if todo:
        cache_dir = Path(cache_dir)
        for c in todo:
            paths[c.path] = cache_dir / f"{c.clip_id}_{seed_of(c.path.resolve()) % 10**8:08d}.npy"
        missing = [c for c in todo if not paths[c.path].is_file()]
        if missing and is_main:
            if not encoder_path:
                raise FileNotFoundError("clips without audio_features.npy need data.audio_encoder (whisper tiny.pt)")
            from echomimic_core.audio import load_audio_encoder

            enc = load_audio_encoder(encoder_path)
            cache_dir.mkdir(parents=True, exist_ok=True)
            for c in missing:
                arr = compute_audio_features(c.path / "audio.wav", enc, c.fps, c.num_frames)
                tmp = paths[c.path].with_suffix(".tmp.npy")
                np.save(tmp, arr)
                os.replace(tmp, paths[c.path])
        if wait is not None:
            wait()

    return FeatureFiles(paths)


class FeatureFiles:
    """clip → its whisper windows (memory-mapped .npy); picklable for DataLoader workers."""

    def __init__(self, paths: dict):
        self.paths = dict(paths)

    def __call__(self, clip: Clip) -> np.ndarray:
        return np.load(self.paths[clip.path], mmap_mode="r")


# ------------------------------------------------------------------------------------------------
# a tiny generated dataset (tests, smoke runs)


def write_tiny_dataset(root: str | os.PathLike, *, num_clips: int = 2, num_frames: int = 8, size: int = 64,
                       tokens: int = 20, seed: int = 0, kinds: Sequence[str] = ("halfbody",),
                       with_features: bool = True) -> Path:
    """A small dataset in the training format: a coloured "person" (head disc, body box, hands) that
    moves a little per frame, keypoints that match the drawing, a sine-tone wav, and (optionally) random
    cached whisper windows [F, tokens, 384]. For tests and smoke runs; not for learning anything."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(num_clips):
        kind = kinds[c % len(kinds)]
        bg = rng.integers(0, 80, 3)
        col = rng.integers(120, 255, 3)
        frames, kp = [], empty_keypoints(num_frames)
        for i in range(num_frames):
            dx = 0.03 * math.sin(2 * math.pi * (i / max(1, num_frames) + c * 0.3))
            img = np.zeros((size, size, 3), np.uint8)
            img[:] = bg
            cx, hy = 0.5 + dx, 0.25
            cv2.circle(img, (int(cx * size), int(hy * size)), max(2, size // 8), [int(v) for v in col], -1)
            cv2.rectangle(img, (int((cx - 0.2) * size), int(0.42 * size)), (int((cx + 0.2) * size), size - 1),
                          [int(v) // 2 for v in col[::-1]], -1)
            mouth_open = 0.01 + 0.01 * (i % 3)
            cv2.ellipse(img, (int(cx * size), int((hy + 0.06) * size)), (max(1, size // 32), max(1, int(mouth_open * size))),
                        0, 0, 360, (30, 0, 0), -1)
            frames.append(img)
            body = kp["bodies"][i]
            body[0] = (cx, hy + 0.02)
            body[1] = (cx, 0.42)
            body[2], body[5] = (cx - 0.18, 0.45), (cx + 0.18, 0.45)
            body[3], body[6] = (cx - 0.22, 0.62), (cx + 0.22, 0.62)
            body[4], body[7] = (cx - 0.2, 0.78), (cx + 0.2, 0.78)
            body[14], body[15], body[16], body[17] = (cx - 0.03, hy - 0.02), (cx + 0.03, hy - 0.02), \
                (cx - 0.09, hy), (cx + 0.09, hy)
            kp["bodies_score"][i, :8] = 0.9
            kp["bodies_score"][i, 14:] = 0.9
            for hnd, hx in ((0, cx + 0.2), (1, cx - 0.2)):
                ang = np.linspace(-0.8, 0.8, 21)
                kp["hands"][i, hnd, :, 0] = hx + 0.05 * np.sin(ang)
                kp["hands"][i, hnd, :, 1] = 0.8 + 0.06 * np.abs(np.cos(ang)) + 0.01 * np.arange(21) / 21
                kp["hands_score"][i, hnd] = 0.9
            t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
            kp["faces"][i, :, 0] = cx + 0.08 * np.cos(t)
            kp["faces"][i, :, 1] = hy + 0.1 * np.sin(t)
            kp["faces"][i, 48:68, 0] = cx + 0.03 * np.cos(t[:20] * 3.4)
            kp["faces"][i, 48:68, 1] = hy + 0.06 + mouth_open * np.sin(t[:20] * 3.4)
            kp["faces_score"][i] = 0.9
        n_audio = int(num_frames / 24 * 16000) + 160
        audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * c) * np.arange(n_audio) / 16000)
        feats = rng.standard_normal((num_frames, tokens, 384)).astype(np.float16) if with_features else None
        content = (0.0, 0.0, 1.0, 1.0) if kind != "headshot" else (0.1, 0.0, 0.9, 0.8)
        write_clip(root, f"clip_{c:04d}", frames, audio, kp, kind=kind, content_box=content,
                   audio_features=feats, audio_encoder="random_for_tests", source="write_tiny_dataset")
    write_index(root)
    return root
