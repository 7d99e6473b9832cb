"""The synthetic talking figure itself (train/synthetic.py): its colours and proportions, the hand
keypoint template, the smooth hand/arm motion and the per-frame pose dict. Split out of synthetic.py
(files stay under 500 lines); behaviour and bytes unchanged."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

from train.dataset_format import FPS

HAND_MARGIN = 0.02  # every hand keypoint stays in [margin, 1 - margin]
GLOVE_SEP = 160.0  # min RGB distance between the glove colour and every other colour of the figure
FULL_CANVAS = [768, 768, 0, 768, 0, 768]

HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
PALM_POINTS = (0, 1, 5, 9, 13, 17)

# 21-point right-hand template (palm facing the camera, fingers up, thumb towards the body midline
# which is +x for the person's right hand at the image's left). Unit: wrist -> middle fingertip.
_HAND_TEMPLATE = np.array([
    (0.00, 0.00),
    (0.13, -0.10), (0.23, -0.20), (0.31, -0.30), (0.37, -0.40),      # thumb
    (0.12, -0.45), (0.14, -0.62), (0.15, -0.75), (0.16, -0.87),      # index
    (0.00, -0.47), (0.00, -0.66), (0.00, -0.82), (0.00, -1.00),      # middle
    (-0.11, -0.45), (-0.12, -0.62), (-0.13, -0.76), (-0.14, -0.88),  # ring
    (-0.20, -0.40), (-0.23, -0.52), (-0.25, -0.62), (-0.27, -0.72),  # little
], dtype=np.float64)
# --------------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _dist(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def _pick(rng, sampler, constraints=(), tries=300):
    """Rejection-sample a colour whose RGB distance to each ``(colour, min_distance)`` of ``constraints``
    is at least that distance; after ``tries`` failures the candidate with the largest worst-case
    margin is used."""
    best, best_margin = None, -1e9
    for _ in range(tries):
        c = sampler()
        margin = min((_dist(c, a) - d for a, d in constraints), default=0.0)
        if margin >= 0:
            return np.round(c)
        if margin > best_margin:
            best, best_margin = c, margin
    return np.round(best)


@dataclass
class Figure:
    """Appearance and static geometry of one figure (normalised coordinates, x right, y down)."""

    bg_kind: str
    bg_colors: list
    bg_param: float
    skin: np.ndarray
    torso_color: np.ndarray
    sleeve_color: np.ndarray
    hair_color: np.ndarray
    hair_kind: str
    lip_color: np.ndarray
    mouth_color: np.ndarray
    eye_color: np.ndarray
    glove_color: np.ndarray
    torso_kind: str
    cx: float
    head_c: tuple
    head_r: tuple
    shoulder_y: float
    shoulder_hw: float
    bottom_hw: float
    neck_hw: float
    arm_len: tuple
    arm_w: float
    hand_len: float
    mouth_c: tuple
    mouth_hw: float
    mouth_max_open: float
    lip_t: float
    eye_r: float
    blobs: list = field(default_factory=list)

    def colours(self) -> dict:
        return {k: [int(v) for v in getattr(self, k)] for k in
                ("skin", "torso_color", "sleeve_color", "hair_color", "lip_color", "mouth_color", "eye_color",
                 "glove_color")}


def sample_figure(rng: np.random.Generator) -> Figure:
    """A random figure. Colours are chosen so the glove (hands) and the mouth interior are far (RGB
    distance) from every other colour in the frame, which keeps the frame-based metrics unambiguous."""
    mouth = _pick(rng, lambda: _hsv(rng.uniform(-0.03, 0.03), rng.uniform(0.5, 0.9), rng.uniform(0.12, 0.2)))
    skin = _pick(rng, lambda: _hsv(rng.uniform(0.02, 0.11), rng.uniform(0.2, 0.6), rng.uniform(0.6, 0.98)),
                 [(mouth, 150)])
    lip = _pick(rng, lambda: _hsv(rng.uniform(-0.04, 0.03), rng.uniform(0.45, 0.75), rng.uniform(0.5, 0.75)),
                [(mouth, 80)])
    glove = _pick(rng, lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0)),
                  [(mouth, GLOVE_SEP), (skin, GLOVE_SEP), (lip, GLOVE_SEP)])
    eye = _pick(rng, lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.6), rng.uniform(0.08, 0.3)),
                [(mouth, 60), (glove, GLOVE_SEP)])

    def clothing():
        return _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.8), rng.uniform(0.3, 0.9))

    torso = _pick(rng, clothing, [(glove, GLOVE_SEP), (skin, 100)])
    sleeve_factor = rng.uniform(0.65, 0.85) if rng.random() < 0.5 else rng.uniform(1.15, 1.3)
    sleeve = np.clip(torso * sleeve_factor, 0, 255)
    if _dist(sleeve, glove) < GLOVE_SEP:
        sleeve = torso.copy()
    hair = _pick(rng, lambda: _hsv(rng.uniform(0, 0.15), rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.7)),
                 [(glove, GLOVE_SEP), (skin, 90)])
    bg_kind = str(rng.choice(["solid", "gradient", "stripes", "blobs"]))
    n_bg = 1 if bg_kind == "solid" else 2
    bg_colors = [_pick(rng, lambda: _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.6), rng.uniform(0.35, 0.95)),
                       [(glove, GLOVE_SEP), (skin, 100), (torso, 100)]) for _ in range(n_bg)]
    blobs = []
    if bg_kind == "blobs":
        for _ in range(int(rng.integers(3, 7))):
            blobs.append((float(rng.uniform(0, 1)), float(rng.uniform(0, 0.6)), float(rng.uniform(0.05, 0.2)),
                          float(rng.uniform(0.05, 0.2)), float(rng.uniform(0, 180))))

    cx = 0.5 + rng.uniform(-0.04, 0.04)
    rx = rng.uniform(0.11, 0.14)
    ry = rx * rng.uniform(1.05, 1.28)
    hy = rng.uniform(0.2, 0.26)
    shoulder_y = hy + ry + rng.uniform(0.06, 0.09)
    shoulder_hw = rng.uniform(0.2, 0.26)
    mouth_hw = rx * rng.uniform(0.4, 0.55)
    return Figure(
        bg_kind=bg_kind, bg_colors=bg_colors, bg_param=float(rng.uniform(0, 1)),
        skin=skin, torso_color=torso, sleeve_color=sleeve, hair_color=hair,
        hair_kind=str(rng.choice(["none", "cap", "cap", "tuft"])),
        lip_color=lip, mouth_color=mouth, eye_color=eye, glove_color=glove,
        torso_kind=str(rng.choice(["trapezoid", "rounded", "ellipse"])),
        cx=cx, head_c=(cx, hy), head_r=(rx, ry), shoulder_y=shoulder_y, shoulder_hw=shoulder_hw,
        bottom_hw=shoulder_hw * rng.uniform(0.8, 1.05), neck_hw=rx * rng.uniform(0.35, 0.5),
        arm_len=(rng.uniform(0.2, 0.25), rng.uniform(0.2, 0.24)), arm_w=rng.uniform(0.05, 0.07),
        hand_len=rng.uniform(0.15, 0.19),
        mouth_c=(cx, hy + ry * rng.uniform(0.45, 0.55)), mouth_hw=mouth_hw,
        mouth_max_open=ry * rng.uniform(0.32, 0.42), lip_t=ry * rng.uniform(0.05, 0.08),
        eye_r=rx * rng.uniform(0.1, 0.14), blobs=blobs,
    )


# --------------------------------------------------------------------------------------------
# motion
# --------------------------------------------------------------------------------------------

def _smooth_signal(rng, n, lo, hi, fmin=0.15, fmax=1.0, fps=FPS):
    """A smooth random signal in [lo, hi]: a sum of three sinusoids at random (slow) frequencies."""
    t = np.arange(n) / fps
    s = np.zeros(n)
    for _ in range(3):
        s += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(fmin, fmax) * t + rng.uniform(0, 2 * np.pi))
    s = s / 1.6  # roughly [-1, 1], clipped
    s = np.clip(s, -1, 1)
    return lo + (hi - lo) * (s + 1) / 2


def hand_keypoints(wrist, angle, length, curl, spread, mirror: bool) -> np.ndarray:
    """21 hand keypoints (normalised) for a wrist position, rotation (rad, 0 = fingers up), hand length,
    finger curl in [0, 1] and spread in [-1, 1]. ``mirror`` flips the template for the person's left hand."""
    p = _HAND_TEMPLATE.copy()
    p[:, 0] *= 1.0 + 0.3 * spread
    for f in range(5):
        base = 4 * f + 1
        for j in range(base + 1, base + 4):
            p[j] = p[base] + (p[j] - p[base]) * (1.0 - 0.55 * curl)
    if mirror:
        p[:, 0] = -p[:, 0]
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return np.asarray(wrist)[None] + length * p @ rot.T


def _elbow(shoulder, wrist, a, b, outward: float) -> np.ndarray:
    """Two-link IK: elbow position for segment lengths a, b; picks the solution on the ``outward``
    side (sign of x offset) and below the shoulder-wrist line when possible."""
    s, w = np.asarray(shoulder, float), np.asarray(wrist, float)
    d = w - s
    L = float(np.linalg.norm(d))
    if L < 1e-9:
        return s + np.array([0.0, a])
    if L >= a + b:
        return s + d * (a / (a + b))
    x = (a * a - b * b + L * L) / (2 * L)
    h = math.sqrt(max(a * a - x * x, 0.0))
    u = d / L
    n = np.array([-u[1], u[0]])
    e1, e2 = s + x * u + h * n, s + x * u - h * n
    score1 = 0.5 * outward * (e1[0] - s[0]) + e1[1]
    score2 = 0.5 * outward * (e2[0] - s[0]) + e2[1]
    return e1 if score1 >= score2 else e2


@dataclass
class FrameState:
    hands: np.ndarray        # [2, 21, 2] hand 0 = person's left (image right), 1 = right (image left)
    elbows: np.ndarray       # [2, 2] same order as hands
    mouth_open: float        # [0, 1]


def hand_motion(rng: np.random.Generator, fig: Figure, n: int) -> list[np.ndarray]:
    """Per-frame [2, 21, 2] hand keypoints (hand 0 = person's left = image right)."""
    out = np.zeros((n, 2, 21, 2))
    reach = 0.95 * (fig.arm_len[0] + fig.arm_len[1])
    for h in range(2):
        side = 1.0 if h == 0 else -1.0  # image x direction of this hand from the midline
        sh = np.array([fig.cx + side * fig.shoulder_hw, fig.shoulder_y])
        if h == 0:
            xs = _smooth_signal(rng, n, max(fig.cx + 0.06, 0.55), 0.94, fmin=0.3, fmax=1.3)
        else:
            xs = _smooth_signal(rng, n, 0.06, min(fig.cx - 0.06, 0.45), fmin=0.3, fmax=1.3)
        ys = _smooth_signal(rng, n, 0.5, 0.94, fmin=0.3, fmax=1.3)
        ang = _smooth_signal(rng, n, -0.9, 0.9, fmax=0.6) * 1.0
        ang = ang - side * 0.25  # lean fingers slightly outward
        curl = _smooth_signal(rng, n, 0.0, 0.8, fmax=0.8)
        spread = _smooth_signal(rng, n, -0.6, 1.0, fmax=0.8)
        for i in range(n):
            w = np.array([xs[i], ys[i]])
            d = w - sh
            L = float(np.linalg.norm(d))
            if L > reach:
                w = sh + d * (reach / L)
            k = hand_keypoints(w, ang[i], fig.hand_len, curl[i], spread[i], mirror=(h == 0))
            # keep the whole hand inside the frame (shift it, wrist included)
            k += np.clip(HAND_MARGIN - k.min(0), 0, None) - np.clip(k.max(0) - (1 - HAND_MARGIN), 0, None)
            out[i, h] = k
    return list(out)


# --------------------------------------------------------------------------------------------
# pose dicts
# --------------------------------------------------------------------------------------------

def face_landmarks(fig: Figure, mouth_open: float) -> np.ndarray:
    """iBUG-68 landmarks [68, 2] of the drawn face; 48-59 outer lip, 60-67 inner lip (the dark opening)."""
    hx, hy = fig.head_c
    rx, ry = fig.head_r
    pts = np.zeros((68, 2))
    phis = np.pi + 0.15 - np.arange(17) * (np.pi + 0.3) / 16
    pts[0:17] = np.stack([hx + rx * np.cos(phis), hy + ry * np.sin(phis)], 1)
    ey = hy - 0.12 * ry
    for k, side in enumerate((-1, 1)):  # image-left brow 17-21 / eye 36-41, then image-right
        ex = hx + side * 0.4 * rx
        bx = ex + np.linspace(-0.2, 0.2, 5) * rx
        pts[17 + 5 * k:22 + 5 * k] = np.stack([bx, ey - 0.3 * ry - 0.05 * ry * np.cos(np.linspace(-1.2, 1.2, 5))], 1)
        ang = np.array([np.pi, 4 * np.pi / 3, 5 * np.pi / 3, 0, np.pi / 3, 2 * np.pi / 3])
        pts[36 + 6 * k:42 + 6 * k] = np.stack([ex + 1.6 * fig.eye_r * np.cos(ang), ey + fig.eye_r * np.sin(ang)], 1)
    pts[27:31] = np.stack([np.full(4, hx), np.linspace(ey, hy + 0.3 * ry, 4)], 1)
    pts[31:36] = np.stack([hx + np.linspace(-0.15, 0.15, 5) * rx, np.full(5, hy + 0.33 * ry)], 1)
    mx, my = fig.mouth_c
    o_h = mouth_open * fig.mouth_max_open / 2  # inner half-height
    out_hw, out_hh = fig.mouth_hw, o_h + fig.lip_t
    in_hw = fig.mouth_hw * 0.82
    outer = np.pi + np.arange(12) * np.pi / 6  # 48 left corner, upper lip, 54 right corner, lower lip
    pts[48:60] = np.stack([mx + out_hw * np.cos(outer), my + out_hh * np.sin(outer)], 1)
    inner = np.pi + np.arange(8) * np.pi / 4
    pts[60:68] = np.stack([mx + in_hw * np.cos(inner), my + o_h * np.sin(inner)], 1)
    return pts


def pose_frame(fig: Figure, st: FrameState, num: int, scores: np.random.Generator) -> dict:
    """One frame in the official per-frame dict layout (float64, normalised coordinates)."""
    hx, hy = fig.head_c
    rx, ry = fig.head_r
    cand = -np.ones((18, 2))
    score = np.zeros(18)
    cand[0] = (hx, hy + 0.15 * ry)                                  # nose
    cand[1] = (fig.cx, fig.shoulder_y)                              # neck
    cand[2] = (fig.cx - fig.shoulder_hw, fig.shoulder_y)            # R shoulder (image left)
    cand[5] = (fig.cx + fig.shoulder_hw, fig.shoulder_y)            # L shoulder
    cand[3], cand[4] = st.elbows[1], st.hands[1, 0]                 # R elbow, wrist
    cand[6], cand[7] = st.elbows[0], st.hands[0, 0]                 # L elbow, wrist
    cand[8] = (fig.cx - 0.6 * fig.bottom_hw, 1.02)                  # hips: just below the frame
    cand[11] = (fig.cx + 0.6 * fig.bottom_hw, 1.02)
    cand[14] = (hx - 0.4 * rx, hy - 0.12 * ry)                      # R eye (image left)
    cand[15] = (hx + 0.4 * rx, hy - 0.12 * ry)
    cand[16] = (hx - rx, hy)                                        # R ear
    cand[17] = (hx + rx, hy)
    visible = [0, 1, 2, 3, 4, 5, 6, 7, 14, 15, 16, 17]
    score[visible] = scores.uniform(0.75, 0.98, len(visible))
    score[[8, 11]] = scores.uniform(0.1, 0.3, 2)
    outside = ((cand < 0) | (cand > 1)).any(1)
    score[outside & (score > 0.3)] = 0.2  # e.g. an elbow below the frame: low confidence, not drawn
    subset = np.where(score > 0.3, np.arange(18, dtype=np.float64), -1.0)[None]
    faces = face_landmarks(fig, st.mouth_open)[None]
    return {
        "bodies": {"candidate": cand, "subset": subset, "score": score[None]},
        "hands": st.hands.copy(),
        "hands_score": scores.uniform(0.85, 1.02, (2, 21)),
        "faces": faces,
        "faces_score": scores.uniform(0.8, 0.98, (1, 68)),
        "num": int(num),
        "draw_pose_params": list(FULL_CANVAS),
    }
