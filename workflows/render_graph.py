"""Draws a ComfyUI UI-format workflow (nodes, sockets, widget values, links) as a PNG with Pillow,
in the look of the ComfyUI editor. Used for the README picture:

    .venv/bin/python workflows/render_graph.py workflows/echomimic_v2_demo_poses.json docs/echomimic_v2_demo_poses.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TYPE_COLORS = {
    "IMAGE": (100, 181, 246), "AUDIO": (234, 128, 252), "VIDEO": (255, 183, 77), "FLOAT": (174, 213, 129),
    "INT": (129, 199, 132), "MASK": (129, 212, 250), "ECHOMIMIC_MODELS": (255, 138, 101),
    "ECHOMIMIC_AUDIO_FEATURES": (206, 147, 216), "ECHOMIMIC_POSES": (255, 241, 118), "STRING": (176, 190, 197),
}
TITLE_H, SLOT_H, WIDGET_H, PAD = 30, 22, 26, 10


def _font(size: int, bold: bool = False):
    names = ["DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"]
    roots = [Path("/usr/share/fonts/truetype/dejavu")]
    try:
        import matplotlib

        roots.append(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf")
    except ImportError:
        pass
    for root in roots:
        for name in names:
            if (root / name).is_file():
                return ImageFont.truetype(str(root / name), size)
    return ImageFont.load_default()


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 26 else text[:24] + "…"


def _layout(node: dict) -> dict:
    """Socket and widget rows of one node (widget names come from the pack's node classes if given)."""
    sockets = [i for i in node.get("inputs", []) if "widget" not in i]
    linked_widgets = {i["widget"]["name"]: i for i in node.get("inputs", []) if "widget" in i}
    return {"sockets": sockets, "outputs": node.get("outputs", []), "linked_widgets": linked_widgets}


CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def _named_values(node: dict, names: list | None) -> list:
    """[(widget name, value)] of a node; without names, the values alone (UI-only values dropped)."""
    values = list(node.get("widgets_values", []))
    if not names:
        return [("", v) for v in values if v not in CONTROL_VALUES and v not in ("image", None)]
    out, k = [], 0
    for name in names:
        if k >= len(values):
            break
        out.append((name, values[k]))
        k += 1
        if name in ("seed", "noise_seed") and k < len(values) and values[k] in CONTROL_VALUES:
            k += 1
    return out


def render(ui: dict, out: Path, title: str | None = None, widget_names: dict | None = None, scale: float = 1.0) -> Path:
    """Render ``ui`` to ``out``. ``widget_names[type]`` = widget names in order (to label the values)."""
    widget_names = widget_names or {}
    nodes = ui["nodes"]
    boxes = {}
    for node in nodes:
        lay = _layout(node)
        x, y = node["pos"]
        w, h = node["size"]
        rows = max(len(lay["sockets"]), len(lay["outputs"]))
        values = _named_values(node, widget_names.get(node["type"]))
        h = max(h, PAD + rows * SLOT_H + len(values) * WIDGET_H + PAD)
        boxes[node["id"]] = (x, y, w, h, lay, values)
    min_x = min(b[0] for b in boxes.values()) - 40
    min_y = min(b[1] for b in boxes.values()) - TITLE_H - 60
    max_x = max(b[0] + b[2] for b in boxes.values()) + 40
    max_y = max(b[1] + b[3] for b in boxes.values()) + 40
    W, H = int((max_x - min_x) * scale), int((max_y - min_y) * scale)
    img = Image.new("RGB", (W, H), (32, 32, 32))
    d = ImageDraw.Draw(img)
    for gx in range(0, W, 40):
        d.line([(gx, 0), (gx, H)], fill=(40, 40, 40))
    for gy in range(0, H, 40):
        d.line([(0, gy), (W, gy)], fill=(40, 40, 40))
    f_title, f_text, f_small = _font(15, True), _font(13), _font(12)

    def P(x, y):
        return ((x - min_x) * scale, (y - min_y) * scale)

    def in_socket(nid, slot):
        x, y, w, h, lay, _ = boxes[nid]
        node = next(n for n in nodes if n["id"] == nid)
        inp = node["inputs"][slot]
        if "widget" in inp:  # a linked widget: point at its row
            return P(x, y + PAD + max(len(lay["sockets"]), len(lay["outputs"])) * SLOT_H + 6)
        idx = lay["sockets"].index(inp)
        return P(x, y + PAD + idx * SLOT_H + SLOT_H / 2)

    def out_socket(nid, slot):
        x, y, w, h, lay, _ = boxes[nid]
        return P(x + w, y + PAD + slot * SLOT_H + SLOT_H / 2)

    # links under the nodes
    for link in ui.get("links", []):
        _, src, src_slot, dst, dst_slot, kind = link[:6]
        (x0, y0), (x1, y1) = out_socket(src, src_slot), in_socket(dst, dst_slot)
        color = TYPE_COLORS.get(kind, (200, 200, 200))
        dx = max(abs(x1 - x0) * 0.5, 60 * scale)
        pts = []
        for k in range(41):
            t = k / 40
            bx = (1 - t) ** 3 * x0 + 3 * (1 - t) ** 2 * t * (x0 + dx) + 3 * (1 - t) * t ** 2 * (x1 - dx) + t ** 3 * x1
            by = (1 - t) ** 3 * y0 + 3 * (1 - t) ** 2 * t * y0 + 3 * (1 - t) * t ** 2 * y1 + t ** 3 * y1
            pts.append((bx, by))
        d.line(pts, fill=color, width=max(2, int(3 * scale)))

    for node in nodes:
        x, y, w, h, lay, values = boxes[node["id"]]
        ours = node["type"].startswith("EchoMimicV2")
        head = (88, 52, 110) if ours else (53, 53, 53)
        x0, y0 = P(x, y - TITLE_H)
        x1, y1 = P(x + w, y + h)
        d.rounded_rectangle([x0, y0, x1, y1], radius=8, fill=(53, 53, 53), outline=(20, 20, 20), width=2)
        d.rounded_rectangle([x0, y0, x1, y0 + TITLE_H * scale], radius=8, fill=head)
        title_text = node.get("title") or node["type"]
        while d.textlength(title_text, font=f_title) > (x1 - x0) - 20 and len(title_text) > 4:
            title_text = title_text[:-2].rstrip() + "…" if not title_text.endswith("…") else title_text[:-2] + "…"
        d.text((x0 + 10, y0 + 7), title_text, font=f_title, fill=(235, 235, 235))
        for i, inp in enumerate(lay["sockets"]):
            cx, cy = P(x, y + PAD + i * SLOT_H + SLOT_H / 2)
            color = TYPE_COLORS.get(inp["type"], (200, 200, 200))
            r = 5 * scale
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color if inp.get("link") else (53, 53, 53), outline=color)
            d.text((cx + 10, cy - 8), inp["name"], font=f_text, fill=(200, 200, 200))
        for i, slot in enumerate(lay["outputs"]):
            cx, cy = P(x + w, y + PAD + i * SLOT_H + SLOT_H / 2)
            color = TYPE_COLORS.get(slot["type"], (200, 200, 200))
            r = 5 * scale
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color if slot.get("links") else (53, 53, 53), outline=color)
            tw = d.textlength(slot["name"], font=f_text)
            d.text((cx - 10 - tw, cy - 8), slot["name"], font=f_text, fill=(200, 200, 200))
        rows = max(len(lay["sockets"]), len(lay["outputs"]))
        wy = y + PAD + rows * SLOT_H
        for i, (label, value) in enumerate(values):
            bx0, by0 = P(x + 10, wy + i * WIDGET_H + 2)
            bx1, by1 = P(x + w - 10, wy + (i + 1) * WIDGET_H - 2)
            d.rounded_rectangle([bx0, by0, bx1, by1], radius=9, fill=(34, 34, 34), outline=(70, 70, 70))
            linked = label in lay["linked_widgets"]
            d.text((bx0 + 10, by0 + 4), label, font=f_small, fill=(150, 150, 150))
            text = "← linked" if linked else _fmt(value)
            tw = d.textlength(text, font=f_small)
            d.text((bx1 - 10 - tw, by0 + 4), text, font=f_small, fill=(220, 220, 220))
    if title:
        d.text((20, 16), title, font=_font(20, True), fill=(230, 230, 230))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    return out


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    render(json.loads(src.read_text()), dst, title=src.stem)
