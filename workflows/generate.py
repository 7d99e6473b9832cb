"""Writes the example workflows (UI format in example_workflows/ for drag-and-drop and the editor's
template browser, with a .jpg thumbnail each; API format in workflows/api/ for POST /prompt) and, with
``--png``, the graph pictures in docs/. The JSON files are the product; this script only keeps them
consistent. Run it from the pack root with a Python that can import the vendored ComfyUI::

    .venv/bin/python workflows/generate.py [--png] [--comfyui ../shared/vendor/ComfyUI]

tests/test_workflows.py checks the UI and API files against each other and against the nodes' inputs,
so a hand edit in the editor ("Save" + "Export (API)") is fine as long as both files are updated.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
EXAMPLES = ROOT / "example_workflows"   # ComfyUI's template folder: UI json + same-name .jpg thumbnail
API = WORKFLOWS / "api"                 # the same graphs for POST /prompt (not a template folder)
DOCS = ROOT / "docs"
THUMB_WIDTH = 640
# the editor's saved view: below the menu bar, whole graph on a 1600 px wide window
VIEW = {"scale": 0.62, "offset": [40, 90]}
# drawn sizes of core nodes with media widgets (a smaller saved size is overdrawn onto the next node)
CORE_HEIGHTS = {"LoadImage": 314, "LoadVideo": 314, "LoadAudio": 166}

# Widgets of the core nodes the workflows use, in /object_info order (checked by the headless test).
# (name, has a control_after_generate value after it). Upload nodes add trailing UI-only values.
CORE_WIDGETS = {
    "LoadImage": [("image", False)],
    "LoadAudio": [("audio", False)],
    "LoadVideo": [("file", False)],
    "GetVideoComponents": [],
    "SaveVideo": [("filename_prefix", False), ("format", False), ("codec", False)],
    "PreviewImage": [],
    "CreateVideo": [("fps", False)],
}
CORE_TITLES = {"LoadImage": "Load Image", "LoadAudio": "Load Audio", "LoadVideo": "Load Video",
               "GetVideoComponents": "Get Video Components", "SaveVideo": "Save Video",
               "PreviewImage": "Preview Image", "CreateVideo": "Create Video"}
CORE_EXTRA_VALUES = {"LoadImage": ["image"], "LoadAudio": [None, None], "LoadVideo": ["image"]}
CORE_SOCKETS = {  # (inputs, outputs) as (name, type)
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadAudio": ([], [("AUDIO", "AUDIO")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def load_pack(comfyui: Path):
    sys.dont_write_bytecode = True
    sys.path.append(str(comfyui))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = True
    spec = importlib.util.spec_from_file_location("echomimic_v2_pack_generate", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    import importlib as _il

    return _il.import_module(spec.name + ".nodes")


def node_schema(cls) -> tuple[list, list, list]:
    """(widgets [(name, control)], socket inputs [(name, type, optional)], outputs [(name, type)])."""
    spec = cls.INPUT_TYPES()
    widgets, sockets = [], []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind = value[0]
            opts = value[1] if len(value) > 1 else {}
            if isinstance(kind, list) or (kind in WIDGET_TYPES and not opts.get("forceInput")):
                widgets.append((name, bool(opts.get("control_after_generate")), opts.get("default")))
            else:
                sockets.append((name, kind, section == "optional"))
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    outputs = list(zip(names, cls.RETURN_TYPES))
    return widgets, sockets, outputs


# ----------------------------------------------------------------------------------------------------
# the graphs: id -> (class, pos, {input: value | (src_id, slot)}, title)
# ----------------------------------------------------------------------------------------------------
REF = "echomimicv2_demo_0014.png"
SPEECH = "speech_en_3s_16k_mono.wav"
DRIVER = "driving_video.mp4"


def common(variant: str) -> dict:
    return {
        1: ("LoadImage", (40, 40), {"image": REF}, "Reference image"),
        2: ("LoadAudio", (40, 400), {"audio": SPEECH}, "Speech"),
        3: ("EchoMimicV2ModelLoader", (40, 620),
            {"model_folder": "echomimic_v2", "variant": variant, "dtype": "auto", "device": "auto",
             "offload": "keep_loaded"}, None),
        4: ("EchoMimicV2AudioEncoder", (440, 620), {"models": (3, 0), "audio": (2, 0), "fps": 24.0}, None),
    }


def graph_demo_poses() -> dict:
    g = common("normal")
    g.update({
        5: ("EchoMimicV2LoadPoses", (440, 40), {"pose_source": "echomimic_poses/01", "fps": 24.0, "path": ""}, None),
        6: ("EchoMimicV2FitPoseLength", (840, 40), {"poses": (5, 0), "frame_count": (4, 1), "policy": "loop"}, None),
        7: ("EchoMimicV2Sampler", (1240, 40),
            {"models": (3, 0), "reference": (1, 0), "audio_features": (4, 0), "poses": (6, 0),
             "seed": 3407, "steps": 30, "cfg": 2.5, "context_frames": 12, "context_overlap": 3,
             "width": 768, "height": 768, "length": 0}, None),
        8: ("EchoMimicV2VideoCombine", (1640, 40), {"images": (7, 0), "fps": (7, 1), "audio": (2, 0)}, None),
        9: ("SaveVideo", (2040, 40), {"video": (8, 0), "filename_prefix": "echomimic_v2/demo_poses",
                                      "format": "auto", "codec": "auto"}, None),
    })
    return g


def graph_driving_video() -> dict:
    g = common("normal")
    g.update({
        5: ("LoadVideo", (440, 40), {"file": DRIVER}, "Driving video (poses)"),
        6: ("GetVideoComponents", (440, 340), {"video": (5, 0)}, None),
        7: ("EchoMimicV2ExtractPoses", (840, 40), {"images": (6, 0), "backend": "mediapipe", "fps": (6, 2),
                                                    "target_fps": 24.0}, None),
        8: ("EchoMimicV2AlignPoses", (840, 260),
            {"poses": (7, 0), "reference": (1, 0), "backend": "mediapipe", "mode": "align_poses"}, None),
        9: ("EchoMimicV2FitPoseLength", (840, 480), {"poses": (8, 0), "frame_count": (4, 1), "policy": "pingpong"}, None),
        10: ("EchoMimicV2Sampler", (1240, 40),
             {"models": (3, 0), "reference": (8, 1), "audio_features": (4, 0), "poses": (9, 0),
              "seed": 3407, "steps": 30, "cfg": 2.5, "context_frames": 12, "context_overlap": 3,
              "width": 768, "height": 768, "length": 0}, None),
        11: ("EchoMimicV2VideoCombine", (1640, 40), {"images": (10, 0), "fps": (10, 1), "audio": (2, 0)}, None),
        12: ("SaveVideo", (2040, 40), {"video": (11, 0), "filename_prefix": "echomimic_v2/driving_video",
                                       "format": "auto", "codec": "auto"}, None),
        13: ("EchoMimicV2PosePreview", (1240, 560),
             {"poses": (9, 0), "width": 768, "height": 768, "parts": "hands (model input)", "max_frames": 24}, None),
        14: ("PreviewImage", (1640, 560), {"images": (13, 0)}, "Pose preview"),
    })
    return g


def graph_accelerated() -> dict:
    g = common("acc")
    g.update({
        5: ("EchoMimicV2LoadPoses", (440, 40), {"pose_source": "echomimic_poses/01", "fps": 24.0, "path": ""}, None),
        6: ("EchoMimicV2FitPoseLength", (840, 40), {"poses": (5, 0), "frame_count": (4, 1), "policy": "loop"}, None),
        7: ("EchoMimicV2SampleToFile", (1240, 40),
            {"models": (3, 0), "reference": (1, 0), "audio_features": (4, 0), "poses": (6, 0),
             "seed": 420, "steps": 6, "cfg": 1.0, "context_frames": 12, "context_overlap": 3,
             "width": 768, "height": 768, "length": 0, "filename_prefix": "echomimic_v2/accelerated",
             "crf": 19, "audio": (2, 0), "context": (9, 0), "preset": (8, 0)}, "Sample To File (acc, streamed mp4)"),
        # the sampler's steps/cfg and context come from these small option nodes
        8: ("EchoMimicV2SamplerPreset", (840, 260), {"preset": "acc"}, None),
        9: ("EchoMimicV2ContextOptions", (840, 420),
            {"context_frames": 12, "context_overlap": 3, "decode_batch": 4, "window_batch": 0}, None),
    })
    return g


def embedded_common() -> dict:
    """Demo inputs + the embedded demo model + its audio encoder: the first nodes of the out-of-the-box graphs."""
    return {
        1: ("EchoMimicV2DemoInputs", (40, 40), {}, None),
        2: ("EchoMimicV2ModelLoader", (40, 300),
            {"model_folder": "(embedded demo)", "variant": "normal", "dtype": "auto", "device": "auto",
             "offload": "keep_loaded"}, None),
        3: ("EchoMimicV2AudioEncoder", (440, 40), {"models": (2, 0), "audio": (1, 1), "fps": 24.0}, None),
    }


def graph_embedded_demo() -> dict:
    """Runs out of the box: the tiny demo model shipped in the package + the shipped demo inputs (no files
    needed in models/ or input/). Settings = `python -m echomimic_core demo --exact` (64x64, 20 steps, cfg 2, seed 0)."""
    return {**embedded_common(),
        4: ("EchoMimicV2FitPoseLength", (440, 260), {"poses": (1, 2), "frame_count": (3, 1), "policy": "loop"}, None),
        5: ("EchoMimicV2Sampler", (840, 40),
            {"models": (2, 0), "reference": (1, 0), "audio_features": (3, 0), "poses": (4, 0),
             "seed": 0, "steps": 20, "cfg": 2.0, "context_frames": 12, "context_overlap": 3,
             "width": 64, "height": 64, "length": 0}, None),
        6: ("EchoMimicV2VideoCombine", (1240, 40), {"images": (5, 0), "fps": (5, 1), "audio": (1, 1)}, None),
        7: ("SaveVideo", (1640, 40), {"video": (6, 0), "filename_prefix": "echomimic_v2/embedded_demo",
                                      "format": "auto", "codec": "auto"}, None),
    }


def graph_audio_only() -> dict:
    """Reference image + audio alone (no pose file): hand poses generated from the speech by the embedded
    gesture model, anchored on the reference person; runs out of the box on the embedded demo model."""
    return {**embedded_common(),
        4: ("EchoMimicV2GesturesFromAudio", (440, 260),
            {"audio_features": (3, 0), "reference": (1, 0), "mode": "audio", "seed": 0, "motion_amount": 1.0,
             "backend": "mediapipe", "max_frames": 0, "gesture_model": ""}, "Gestures from the speech"),
        5: ("EchoMimicV2Sampler", (840, 40),
            {"models": (2, 0), "reference": (1, 0), "audio_features": (3, 0), "poses": (4, 0),
             "seed": 0, "steps": 20, "cfg": 2.0, "context_frames": 12, "context_overlap": 3,
             "width": 64, "height": 64, "length": 0}, None),
        6: ("EchoMimicV2VideoCombine", (1240, 40), {"images": (5, 0), "fps": (5, 1), "audio": (1, 1)}, None),
        7: ("SaveVideo", (1640, 40), {"video": (6, 0), "filename_prefix": "echomimic_v2/audio_only",
                                      "format": "auto", "codec": "auto"}, None),
        8: ("EchoMimicV2PosePreview", (840, 460),
            {"poses": (4, 0), "width": 256, "height": 256, "parts": "hands (model input)", "max_frames": 24}, None),
        9: ("PreviewImage", (1240, 460), {"images": (8, 0)}, "Generated poses"),
    }


WORKFLOWS_DEF = {
    "echomimic_v2_demo_poses": graph_demo_poses,
    "echomimic_v2_driving_video": graph_driving_video,
    "echomimic_v2_accelerated": graph_accelerated,
    "echomimic_v2_embedded_demo": graph_embedded_demo,
    "echomimic_v2_audio_only": graph_audio_only,
}


# ----------------------------------------------------------------------------------------------------
def build(graph: dict, schemas: dict, titles: dict) -> tuple[dict, dict]:
    api, nodes, links = {}, [], []
    out_links: dict = {}
    link_id = 0
    order = {nid: i for i, nid in enumerate(sorted(graph))}
    for nid in sorted(graph):
        cls, pos, values, title = graph[nid]
        widgets, sockets, outputs = schemas[cls]
        inputs_api, ui_inputs, widgets_values = {}, [], []
        for slot, (name, kind, optional) in enumerate(sockets):
            entry = {"name": name, "type": kind, "link": None}
            if optional:
                entry["shape"] = 7
            if name in values:
                src, src_slot = values[name]
                link_id += 1
                links.append([link_id, src, src_slot, nid, slot, kind])
                out_links.setdefault((src, src_slot), []).append(link_id)
                entry["link"] = link_id
                inputs_api[name] = [str(src), src_slot]
            elif not optional:
                raise ValueError(f"{cls} #{nid}: required input {name!r} not connected")
            ui_inputs.append(entry)
        for name, control, default in widgets:
            value = values[name]
            if isinstance(value, tuple):  # a widget fed by a link
                src, src_slot = value
                kind = schemas[graph[src][0]][2][src_slot][1]
                link_id += 1
                slot = len(ui_inputs)
                links.append([link_id, src, src_slot, nid, slot, kind])
                out_links.setdefault((src, src_slot), []).append(link_id)
                ui_inputs.append({"name": name, "type": kind, "widget": {"name": name}, "link": link_id})
                inputs_api[name] = [str(src), src_slot]
                widgets_values.append(default)
            else:
                inputs_api[name] = value
                widgets_values.append(value)
            if control:
                widgets_values.append("fixed")
        widgets_values += CORE_EXTRA_VALUES.get(cls, [])
        height = 46 + 22 * max(len([i for i in ui_inputs if "widget" not in i]), len(outputs)) + 26 * len(widgets)
        height = CORE_HEIGHTS.get(cls, height)
        nodes.append({
            "id": nid, "type": cls, "pos": list(pos), "size": [340, height], "flags": {}, "order": order[nid],
            "mode": 0, "inputs": ui_inputs,
            "outputs": [{"name": name, "type": kind, "links": None} for name, kind in outputs],
            "properties": {"Node name for S&R": cls},
            "widgets_values": widgets_values,
        })
        title = title or titles.get(cls, cls)
        nodes[-1]["title"] = title
        api[str(nid)] = {"class_type": cls, "inputs": inputs_api, "_meta": {"title": title}}
    for node in nodes:
        for slot, out in enumerate(node["outputs"]):
            out["links"] = out_links.get((node["id"], slot)) or None
    ui = {"last_node_id": max(graph), "last_link_id": link_id, "nodes": nodes, "links": links, "groups": [],
          "config": {}, "extra": {"ds": {"scale": VIEW["scale"], "offset": list(VIEW["offset"])}}, "version": 0.4}
    return ui, api


def schemas_for(pack) -> dict:
    schemas = {}
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        schemas[name] = node_schema(cls)
    for name, widgets in CORE_WIDGETS.items():
        ins, outs = CORE_SOCKETS.get(name, ([], []))
        schemas[name] = ([(w, c, None) for w, c in widgets], [(n, t, False) for n, t in ins], outs)
    return schemas


def thumbnail(ui: dict, path: Path, title: str, widget_names: dict) -> None:
    """The template browser's picture: the graph drawn by render_graph, THUMB_WIDTH wide, JPEG."""
    import tempfile

    from PIL import Image

    sys.path.insert(0, str(WORKFLOWS))
    from render_graph import render

    with tempfile.TemporaryDirectory() as tmp, Image.open(render(ui, Path(tmp) / "graph.png", title=title,
                                                                 widget_names=widget_names)) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMB_WIDTH, THUMB_WIDTH), Image.LANCZOS)
        img.save(path, "JPEG", quality=85, optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR", str(ROOT.parent / "shared" / "vendor" / "ComfyUI")))
    ap.add_argument("--png", action="store_true", help="also render docs/<workflow>.png")
    args = ap.parse_args(argv)
    pack = load_pack(Path(args.comfyui))
    schemas = schemas_for(pack)
    names = {cls: [w[0] for w in sch[0]] for cls, sch in schemas.items()}
    EXAMPLES.mkdir(exist_ok=True)
    API.mkdir(exist_ok=True)
    for name, fn in WORKFLOWS_DEF.items():
        ui, api = build(fn(), schemas, {**CORE_TITLES, **pack.NODE_DISPLAY_NAME_MAPPINGS})
        (EXAMPLES / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (API / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n")
        thumbnail(ui, EXAMPLES / f"{name}.jpg", name, names)
        print("wrote", EXAMPLES / f"{name}.json", EXAMPLES / f"{name}.jpg", API / f"{name}.json")
        if args.png:
            sys.path.insert(0, str(WORKFLOWS))
            from render_graph import render

            DOCS.mkdir(exist_ok=True)
            render(ui, DOCS / f"{name}.png", title=name, widget_names=names)
            print("wrote", DOCS / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
