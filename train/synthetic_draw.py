"""Drawing a synthetic figure frame (train/synthetic.py): anti-aliased fixed-point OpenCV drawing on a
supersampled canvas. Split out of synthetic.py (files stay under 500 lines); bytes unchanged."""

from __future__ import annotations

import cv2
import numpy as np

from train.synthetic_figure import HAND_EDGES, PALM_POINTS, Figure, FrameState  # noqa: F401

SUPERSAMPLE = 4



# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

_SHIFT = 4
_ONE = 1 << _SHIFT


class _Canvas:
    """Supersampled drawing canvas; points are normalised, continuous-coordinate correct (the final
    pixel j covers [j, j+1) of x * size)."""

    def __init__(self, size: int):
        self.size = size
        self.n = size * SUPERSAMPLE
        self.img = np.zeros((self.n, self.n, 3), np.uint8)

    def p(self, xy) -> tuple[int, int]:
        x, y = xy
        return (int(round((x * self.n - 0.5) * _ONE)), int(round((y * self.n - 0.5) * _ONE)))

    def r(self, v: float) -> int:
        return max(int(round(v * self.n * _ONE)), 1)

    def ellipse(self, c, axes, color, angle=0.0, start=0, end=360, thickness=-1):
        cv2.ellipse(self.img, self.p(c), (self.r(axes[0]), self.r(axes[1])), angle, start, end,
                    _bgr(color), thickness, cv2.LINE_8, _SHIFT)

    def poly(self, pts, color):
        arr = np.array([self.p(q) for q in pts], np.int32)
        cv2.fillPoly(self.img, [arr], _bgr(color), cv2.LINE_8, _SHIFT)

    def line(self, a, b, color, width):
        w = max(int(round(width * self.n)), 1)
        cv2.line(self.img, self.p(a), self.p(b), _bgr(color), w, cv2.LINE_8, _SHIFT)
        for q in (a, b):
            self.ellipse(q, (width / 2, width / 2), color)

    def result(self) -> np.ndarray:
        small = cv2.resize(self.img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def _bgr(c) -> tuple[int, int, int]:
    c = np.clip(np.round(np.asarray(c, float)), 0, 255).astype(int)
    return int(c[2]), int(c[1]), int(c[0])


def render_background(fig: Figure, size: int) -> np.ndarray:
    """The static background as a supersampled BGR image."""
    n = size * SUPERSAMPLE
    c0 = np.asarray(fig.bg_colors[0], float)
    if fig.bg_kind == "solid":
        img = np.broadcast_to(c0, (n, n, 3)).copy()
    else:
        c1 = np.asarray(fig.bg_colors[1], float)
        yy, xx = np.mgrid[0:n, 0:n] / n
        ang = fig.bg_param * np.pi
        proj = np.cos(ang) * xx + np.sin(ang) * yy
        if fig.bg_kind == "gradient":
            t = (proj - proj.min()) / max(proj.max() - proj.min(), 1e-9)
        elif fig.bg_kind == "stripes":
            t = (np.sin(2 * np.pi * proj * (2 + 3 * fig.bg_param)) > 0).astype(float)
        else:
            t = np.zeros((n, n))
        img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img = np.round(img[..., ::-1]).astype(np.uint8).copy()  # RGB -> BGR
    if fig.bg_kind == "blobs":
        cv = _Canvas(size)
        cv.img = img
        for (bx, by, ax, ay, a) in fig.blobs:
            cv.ellipse((bx, by), (ax, ay), fig.bg_colors[1], angle=a)
        img = cv.img
    return img


def render_frame(fig: Figure, st: FrameState, size: int, background: np.ndarray | None = None) -> np.ndarray:
    """Draw one frame: uint8 RGB [size, size, 3]."""
    cv = _Canvas(size)
    cv.img = (render_background(fig, size) if background is None else background).copy()
    cx, sy = fig.cx, fig.shoulder_y
    hx, hy = fig.head_c
    rx, ry = fig.head_r
    # torso
    shw, bhw = fig.shoulder_hw, fig.bottom_hw
    if fig.torso_kind == "trapezoid":
        cv.poly([(cx - shw, sy), (cx + shw, sy), (cx + bhw, 1.05), (cx - bhw, 1.05)], fig.torso_color)
        cv.ellipse((cx - shw, sy + 0.04), (0.04, 0.04), fig.torso_color)
        cv.ellipse((cx + shw, sy + 0.04), (0.04, 0.04), fig.torso_color)
    elif fig.torso_kind == "rounded":
        cv.poly([(cx - shw, sy + 0.05), (cx + shw, sy + 0.05), (cx + bhw, 1.05), (cx - bhw, 1.05)], fig.torso_color)
        cv.ellipse((cx, sy + 0.05), (shw, 0.06), fig.torso_color)
    else:
        cv.ellipse((cx, 1.05), (max(shw, bhw) * 1.05, 1.05 - sy), fig.torso_color)
    # neck and head
    cv.poly([(cx - fig.neck_hw, hy + 0.5 * ry), (cx + fig.neck_hw, hy + 0.5 * ry),
             (cx + fig.neck_hw, sy + 0.02), (cx - fig.neck_hw, sy + 0.02)], fig.skin)
    if fig.hair_kind == "tuft":
        cv.ellipse((hx, hy - 0.85 * ry), (0.5 * rx, 0.35 * ry), fig.hair_color)
    cv.ellipse((hx, hy), (rx, ry), fig.skin)
    if fig.hair_kind == "cap":
        cv.ellipse((hx, hy - 0.05 * ry), (rx * 1.04, ry * 1.02), fig.hair_color, start=180, end=360)
    ey = hy - 0.12 * ry
    for side in (-1, 1):
        cv.ellipse((hx + side * 0.4 * rx, ey), (1.4 * fig.eye_r, fig.eye_r), fig.eye_color)
    # mouth: lips ellipse, then the dark opening
    mx, my = fig.mouth_c
    o_h = st.mouth_open * fig.mouth_max_open / 2
    cv.ellipse((mx, my), (fig.mouth_hw, o_h + fig.lip_t), fig.lip_color)
    if o_h > 0:
        cv.ellipse((mx, my), (fig.mouth_hw * 0.82, o_h), fig.mouth_color)
    # arms then hands
    for h in range(2):
        side = 1.0 if h == 0 else -1.0
        sh = (cx + side * shw, sy + 0.02)
        el, wr = st.elbows[h], st.hands[h, 0]
        cv.line(sh, el, fig.sleeve_color, fig.arm_w)
        cv.line(el, wr, fig.sleeve_color, fig.arm_w * 0.85)
    for h in range(2):
        k = st.hands[h]
        hull = cv2.convexHull(np.array([cv.p(k[i]) for i in PALM_POINTS], np.int32))
        cv2.fillPoly(cv.img, [hull], _bgr(fig.glove_color), cv2.LINE_8, _SHIFT)
        fw = fig.hand_len * 0.17
        for base in (1, 5, 9, 13, 17):
            for j in range(base, base + 3):
                cv.line(k[j], k[j + 1], fig.glove_color, fw)
    return cv.result()
