"""The example workflows: UI format (example_workflows/, with a thumbnail each) and API format
(workflows/api/) stay in sync, use only core nodes and ours, and every value fits the node's inputs; a
workflow saved with the legacy (V1) nodes still maps onto the V3 nodes. (Running them in a real ComfyUI
is tests/test_comfyui_headless.py; in the browser, tests/test_comfyui_browser.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from support.comfy import load_nodes
from support.paths import REPO
from support.workflows import (API, CONTROL_VALUES, CORE_NODES, EXAMPLES, LEGACY, NAMES, WIDGET_TYPES,  # noqa: F401
                               WORKFLOWS, _generate_module, ui_to_api, widget_order_from_input_types,
                               widget_orders)

def load(name: str) -> tuple[dict, dict]:
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    api = json.loads((API / f"{name}.json").read_text())
    return ui, api


@pytest.fixture(scope="module")
def orders():
    return widget_orders()


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_in_sync(name, orders):
    ui, api = load(name)
    converted = ui_to_api(ui, orders)
    stripped = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in api.items()}
    assert converted == stripped


@pytest.mark.parametrize("name", NAMES)
def test_only_core_nodes_and_ours(name):
    pack = load_nodes()
    ui, api = load(name)
    used = {n["type"] for n in ui["nodes"]}
    assert used <= CORE_NODES | set(pack.NODE_CLASS_MAPPINGS), used - CORE_NODES - set(pack.NODE_CLASS_MAPPINGS)
    assert {n["class_type"] for n in api.values()} == used


@pytest.mark.parametrize("name", NAMES)
def test_ui_links_are_consistent(name):
    ui, _ = load(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] >= max(nodes)
    assert ui["last_link_id"] >= max(link[0] for link in ui["links"])
    for link_id, src, src_slot, dst, dst_slot, kind in ui["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert out["type"] == kind, (link_id, out, kind)
        assert inp["link"] == link_id and link_id in (out["links"] or [])
        if "widget" not in inp:
            assert inp["type"] == kind, (link_id, inp, kind)


@pytest.mark.parametrize("name", NAMES)
def test_api_values_fit_our_nodes(name):
    """Every required input of our nodes is given; numbers are in range, combos are valid options
    (except the lists that depend on what is installed: model folders and pose sources)."""
    pack = load_nodes()
    _, api = load(name)
    for nid, node in api.items():
        cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls is None:
            continue
        spec = cls.INPUT_TYPES()
        for name_, value in spec["required"].items():
            assert name_ in node["inputs"], f"{node['class_type']} #{nid}: {name_} missing"
        for section in ("required", "optional"):
            for name_, decl in spec.get(section, {}).items():
                if name_ not in node["inputs"] or isinstance(node["inputs"][name_], list):
                    continue
                given = node["inputs"][name_]
                kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
                if kind == "COMBO":
                    if name_ not in ("model_folder", "pose_source"):
                        assert given in opts["options"], (nid, name_, given)
                elif kind in ("INT", "FLOAT"):
                    assert opts.get("min", given) <= given <= opts.get("max", given), (nid, name_, given)


def test_each_use_is_covered():
    _, demo = load("echomimic_v2_demo_poses")
    _, driving = load("echomimic_v2_driving_video")
    _, acc = load("echomimic_v2_accelerated")
    types = lambda api: {n["class_type"] for n in api.values()}  # noqa: E731
    assert {"EchoMimicV2LoadPoses", "EchoMimicV2Sampler", "EchoMimicV2VideoCombine", "SaveVideo"} <= types(demo)
    assert {"LoadVideo", "GetVideoComponents", "EchoMimicV2ExtractPoses", "EchoMimicV2AlignPoses",
            "EchoMimicV2Sampler", "SaveVideo"} <= types(driving)
    loaders = [n for n in acc.values() if n["class_type"] == "EchoMimicV2ModelLoader"]
    assert loaders and loaders[0]["inputs"]["variant"] == "acc"
    assert "EchoMimicV2SampleToFile" in types(acc)
    sampler = next(n for n in acc.values() if n["class_type"] == "EchoMimicV2SampleToFile")
    assert sampler["inputs"]["steps"] == 6 and sampler["inputs"]["cfg"] == 1.0
    # the configurable sampler graph: preset + context option nodes feed the sampler
    assert {"EchoMimicV2SamplerPreset", "EchoMimicV2ContextOptions"} <= types(acc)
    assert acc[sampler["inputs"]["preset"][0]]["inputs"]["preset"] == "acc"


def test_generator_reproduces_the_files(tmp_path, monkeypatch):
    """workflows/generate.py writes exactly the committed files (so they never drift apart)."""
    gen = _generate_module()
    pack = load_nodes()
    schemas = gen.schemas_for(pack)
    titles = {**gen.CORE_TITLES, **pack.NODE_DISPLAY_NAME_MAPPINGS}
    for name, fn in gen.WORKFLOWS_DEF.items():
        ui, api = gen.build(fn(), schemas, titles)
        assert (ui, api) == load(name), name


@pytest.mark.parametrize("name", NAMES)
def test_each_template_has_a_thumbnail(name):
    from PIL import Image

    with Image.open(EXAMPLES / f"{name}.jpg") as img:
        assert img.format == "JPEG" and 200 <= img.width <= 800


def test_only_templates_in_template_folders():
    # ComfyUI lists <pack>/{example_workflows,workflows,example,examples,workflow}/*.json as templates
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(NAMES)
    for folder in ("workflows", "example", "examples", "workflow"):
        assert not list((REPO / folder).glob("*.json")), folder


@pytest.mark.parametrize("legacy", sorted(p.name for p in LEGACY.glob("*.json")))
def test_a_workflow_saved_with_the_legacy_nodes_still_maps(legacy, orders):
    """Saved before the V3 rewrite: same node ids, same widget order, so its values land on the same
    inputs (the browser test also loads it in the editor)."""
    ui = json.loads((LEGACY / legacy).read_text())
    name = legacy.rsplit("_v1_nodes", 1)[0]
    _, api = load(name)
    pack = load_nodes()
    assert {n["type"] for n in ui["nodes"]} <= CORE_NODES | set(pack.NODE_CLASS_MAPPINGS)
    converted = ui_to_api(ui, orders)
    assert converted == {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in api.items()}


@pytest.mark.parametrize("name", NAMES)
def test_graph_picture_exists(name):
    from PIL import Image

    path = REPO / "docs" / f"{name}.png"
    assert path.is_file()
    with Image.open(path) as img:
        assert img.width > 800 and img.height > 300
