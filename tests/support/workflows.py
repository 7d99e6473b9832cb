"""The example workflows' helpers: folders, names, the core-node widget table, and the UI → API conversion
the editor's "Export (API)" does (used by test_workflows, test_comfyui_headless and test_comfyui_browser)."""

from __future__ import annotations

import importlib.util

from support.comfy import load_nodes
from support.paths import REPO

WORKFLOWS = REPO / "workflows"
EXAMPLES = REPO / "example_workflows"
API = WORKFLOWS / "api"
LEGACY = REPO / "tests" / "workflows_legacy"
NAMES = ["echomimic_v2_demo_poses", "echomimic_v2_driving_video", "echomimic_v2_accelerated",
         "echomimic_v2_embedded_demo", "echomimic_v2_audio_only"]
CORE_NODES = {"LoadImage", "LoadAudio", "LoadVideo", "GetVideoComponents", "SaveVideo", "PreviewImage",
              "CreateVideo"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _generate_module():
    spec = importlib.util.spec_from_file_location("workflows_generate", WORKFLOWS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def widget_order_from_input_types(spec: dict) -> list[tuple[str, bool]]:
    out = []
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind, opts = value[0], (value[1] if len(value) > 1 else {})
            if isinstance(kind, list) or (kind in WIDGET_TYPES and not opts.get("forceInput")):
                out.append((name, bool(opts.get("control_after_generate")) or name in ("seed", "noise_seed")))
    return out


def widget_orders() -> dict:
    """Widget names in order per node type: ours from INPUT_TYPES, core from the generator's table
    (which the headless test checks against the real /object_info)."""
    pack = load_nodes()
    orders = {name: widget_order_from_input_types(cls.INPUT_TYPES()) for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    for name, widgets in _generate_module().CORE_WIDGETS.items():
        orders[name] = list(widgets)
    return orders


def ui_to_api(ui: dict, orders: dict) -> dict:
    """What the editor's "Export (API)" makes of a UI workflow: links become [src_id, slot], widget
    values are keyed by widget name (control_after_generate and upload values dropped)."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4):  # muted / bypassed nodes are not exported
            continue
        inputs = {}
        values = list(node.get("widgets_values") or [])
        k = 0
        for name, control in orders[node["type"]]:
            if k < len(values):
                inputs[name] = values[k]
            k += 1
            if control and k < len(values) and values[k] in CONTROL_VALUES:
                k += 1
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api
