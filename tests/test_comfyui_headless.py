"""The pack inside a real ComfyUI: the vendored ComfyUI (shared/vendor/ComfyUI) is started headless on
CPU on a free loopback port with this pack linked into its custom nodes and the tiny test models (the
official layout) as its models folder. The tests check /object_info, queue each API workflow over
HTTP, wait for it and check the mp4 it wrote (frames, size, audio stream), and check that a failing
node (missing model file) gives a clear node error while the server keeps serving."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from support.paths import REPO, SHARED
from support.comfy import MEDIA, load_nodes, make_broken_models_dir, make_models_dir
from support.workflows import NAMES, ui_to_api

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

from support.server import (  # noqa: F401  (comfy: the server fixture)
    HELPER, PACK_NAME, REF_IMAGE, SPEECH, DRIVER, SIZE, STEPS, LENGTH, RUN_TIMEOUT, SITECUSTOMIZE,
    PROBE_NAME, PROBE, make_driving_video, comfy, _get, _post, queue, wait, error_message, explain,
    small, load_api, saved_videos, probe)

def test_object_info_lists_every_node_with_its_v3_schema(comfy):
    info = _get(comfy["COMFYUI_URL"] + "/object_info")
    pack = load_nodes()
    assert len(pack.NODES) == len(pack.NODE_CLASS_MAPPINGS) >= 13
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} not registered"
        node = info[name]
        spec = cls.GET_NODE_INFO_V1()
        for section in ("required", "optional"):
            assert list(node["input"].get(section, {})) == list(spec["input"].get(section, {})), (name, section)
            for key, (kind, opts) in node["input"].get(section, {}).items():
                assert opts.get("tooltip"), (name, key)
        assert node["output"] == list(cls.RETURN_TYPES)
        assert node["category"] == "EchoMimicV2"
        assert node["display_name"] == pack.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert "unique_id" in node["input"].get("hidden", {})
    assert info["EchoMimicV2ModelLoader"]["input"]["required"]["dtype"][1]["advanced"] is True
    # the model folders found in models/echomimic_v2 and the pose folders in input/echomimic_poses
    folders = info["EchoMimicV2ModelLoader"]["input"]["required"]["model_folder"][1]["options"]
    assert "echomimic_v2" in folders and "echomimic_v2/broken" in folders
    sources = info["EchoMimicV2LoadPoses"]["input"]["required"]["pose_source"][1]["options"]
    assert "echomimic_poses/01" in sources
    for core in ("LoadAudio", "LoadImage", "LoadVideo", "GetVideoComponents", "SaveVideo", "PreviewImage"):
        assert core in info


def test_ui_workflows_are_offered_as_templates_with_thumbnails(comfy):
    """ComfyUI serves a pack's example_workflows/*.json (+ same-name .jpg) as editor templates (API
    files sit in workflows/api/, which is not a template folder)."""
    templates = _get(comfy["COMFYUI_URL"] + "/workflow_templates")
    assert sorted(templates.get(PACK_NAME, [])) == sorted(NAMES)
    for name in NAMES:
        ui = _get(f"{comfy['COMFYUI_URL']}/api/workflow_templates/{PACK_NAME}/{name}.json")
        assert ui["nodes"] and ui["links"]
        with urllib.request.urlopen(f"{comfy['COMFYUI_URL']}/api/workflow_templates/{PACK_NAME}/{name}.jpg") as r:
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff"  # a JPEG


def test_core_widget_order_matches_object_info(comfy):
    """The UI->API conversion (and the workflow generator) use a table of the core nodes' widgets;
    it must match the real server's schema."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wf_gen", REPO / "workflows" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    info = _get(comfy["COMFYUI_URL"] + "/object_info")
    widget_types = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
    for name, widgets in gen.CORE_WIDGETS.items():
        node = info[name]
        order = node.get("input_order", {})
        names = order.get("required", []) + order.get("optional", [])
        real = []
        for n in names:
            decl = node["input"].get("required", {}).get(n) or node["input"]["optional"][n]
            kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            if isinstance(kind, list) or kind in widget_types:
                real.append((n, bool(opts.get("control_after_generate"))))
        assert real == [tuple(w) for w in widgets], name


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_equals_ui_workflow_under_server_schema(comfy, name):
    """Convert the UI workflow with the widget order served by /object_info and compare with the API file."""
    info = _get(comfy["COMFYUI_URL"] + "/object_info")
    ui = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
    orders = {}
    for node in ui["nodes"]:
        spec = info[node["type"]]
        names = spec["input_order"].get("required", []) + spec["input_order"].get("optional", [])
        widgets = []
        for n in names:
            decl = spec["input"].get("required", {}).get(n) or spec["input"]["optional"][n]
            kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                widgets.append((n, bool(opts.get("control_after_generate"))))
        orders[node["type"]] = widgets
    api = load_api(name)
    assert ui_to_api(ui, orders) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}


@pytest.mark.parametrize("name", NAMES)
def test_workflow_runs_and_writes_mp4(comfy, name):
    t0 = time.time()
    pid = queue(comfy, small(load_api(name)))
    entry = wait(comfy, pid)
    assert entry["status"]["status_str"] == "success", explain(entry)
    videos = saved_videos(comfy, entry)
    assert len(videos) == 1, entry["outputs"]
    facts = probe(videos[0])
    print(f"{name}: {time.time() - t0:.1f}s {facts}")
    assert facts["frames"] == LENGTH
    assert (facts["width"], facts["height"]) == (SIZE, SIZE)
    assert facts["vcodec"] == "h264"
    assert facts["acodec"] == "aac"
    assert facts["audio_duration"] == pytest.approx(LENGTH / 24.0, abs=0.08)
    # the pose preview (driving-video workflow) shows the drawn poses
    api = load_api(name)
    for nid, node in api.items():
        if node["class_type"] == "PreviewImage":
            assert len(entry["outputs"][nid]["images"]) == 4  # max_frames in small()
    # atomic writers leave no partial files behind
    assert not [p for p in (comfy["rt"] / "output").rglob("*partial*")]


def test_missing_model_file_is_a_node_error_and_the_server_keeps_serving(comfy):
    api = small(load_api("echomimic_v2_demo_poses"))
    loader = next(k for k, n in api.items() if n["class_type"] == "EchoMimicV2ModelLoader")
    api[loader]["inputs"]["model_folder"] = "echomimic_v2/broken"
    entry = wait(comfy, queue(comfy, api), timeout=120)
    assert entry["status"]["status_str"] == "error"
    err = error_message(entry)
    assert err["node_id"] == loader and err["node_type"] == "EchoMimicV2ModelLoader"
    assert "denoising_unet" in err["exception_message"], err["exception_message"]
    # converted at the node edge: one line naming the node, no library frames in the panel's traceback
    assert err["exception_type"].endswith("EchoMimicNodeError"), err["exception_type"]
    assert err["exception_message"].startswith("EchoMimicV2 Model Loader: ") and "\n" not in err["exception_message"].strip()
    assert not [line for line in err["traceback"] if "echomimic_core" in line], err["traceback"]
    # still serving: schema, and a small prompt of ours runs to completion
    assert "EchoMimicV2Sampler" in _get(comfy["COMFYUI_URL"] + "/object_info/EchoMimicV2Sampler")
    prompt = {
        "1": {"class_type": "EchoMimicV2LoadPoses", "inputs": {"pose_source": "echomimic_poses/01", "fps": 24.0}},
        "2": {"class_type": "EchoMimicV2PosePreview",
              "inputs": {"poses": ["1", 0], "width": 64, "height": 64, "parts": "hands (model input)", "max_frames": 2}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    entry = wait(comfy, queue(comfy, prompt), timeout=120)
    assert entry["status"]["status_str"] == "success", explain(entry)
    assert len(entry["outputs"]["3"]["images"]) == 2


def test_invalid_widget_value_is_rejected_at_validation(comfy):
    api = small(load_api("echomimic_v2_demo_poses"))
    loader = next(k for k, n in api.items() if n["class_type"] == "EchoMimicV2ModelLoader")
    api[loader]["inputs"]["variant"] = "turbo"
    status, body = _post(comfy["COMFYUI_URL"] + "/prompt", {"prompt": api, "client_id": "t"})
    assert status == 400
    assert loader in body["node_errors"]


def test_interrupt_stops_the_sampler_mid_run(comfy):
    """Press "cancel" (POST /interrupt) once the sampler reports progress: the run ends within a few
    windows as execution_interrupted (it would take minutes otherwise) and the server goes on."""
    import asyncio

    import aiohttp

    api = small(load_api("echomimic_v2_demo_poses"))
    sampler = next(k for k, n in api.items() if n["class_type"] == "EchoMimicV2Sampler")
    api[sampler]["inputs"].update(steps=200, length=48)
    url = comfy["COMFYUI_URL"]
    client = str(uuid.uuid4())

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client}") as ws:
                async with session.post(url + "/prompt", json={"prompt": api, "client_id": client}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                pressed, progress = None, []
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    m = json.loads(msg.data)
                    data = m.get("data", {})
                    if data.get("prompt_id") not in (None, prompt_id):
                        continue
                    if m["type"] == "progress" and data.get("node") == sampler:
                        progress.append((data["value"], data["max"]))
                        if pressed is None:
                            async with session.post(url + "/interrupt") as r:
                                assert r.status == 200
                            pressed = time.time()
                    elif m["type"] == "execution_interrupted":
                        return prompt_id, time.time() - pressed if pressed else None, progress, data
                    elif m["type"] in ("execution_success", "execution_error"):
                        return prompt_id, None, progress, m

    prompt_id, delay, progress, data = asyncio.run(asyncio.wait_for(scenario(), RUN_TIMEOUT))
    assert delay is not None, (progress[-3:], data)
    assert data["node_id"] == sampler and data["node_type"] == "EchoMimicV2Sampler"
    assert delay < 60 and progress[-1][0] < progress[-1][1]
    entry = wait(comfy, prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "error"  # ComfyUI records an interrupted run as not successful
    assert _get(url + "/queue")["queue_running"] == []


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def demo_weight_bytes() -> int:
    """fp32 bytes of the embedded demo model's networks + whisper (the loader's auto dtype on CPU)."""
    import math

    from safetensors import safe_open

    total = 0
    for path in (REPO / "echomimic_core" / "assets" / "demo_model").rglob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) * 4 for key in f.keys())
    return total


def test_free_model_and_node_cache_frees_the_weights_and_the_next_run_reloads(comfy):
    """"Free model and node cache" (POST /free) drops the EchoMimicV2 weights from the server process
    (RSS falls by about the model's size) and the next run loads them again (the loader runs, it is not
    served from ComfyUI's cache)."""
    pid, url = int(comfy["COMFYUI_PID"]), comfy["COMFYUI_URL"]
    api = small(load_api("echomimic_v2_embedded_demo"))
    loader = next(k for k, n in api.items() if n["class_type"] == "EchoMimicV2ModelLoader")

    def run_once():
        entry = wait(comfy, queue(comfy, api))
        assert entry["status"]["status_str"] == "success", explain(entry)
        cached = [d.get("nodes", []) for kind, d in entry["status"]["messages"] if kind == "execution_cached"]
        return entry, {n for c in cached for n in c}

    probe = lambda: _get(url + "/echomimic_test/tensors")  # noqa: E731
    _post(url + "/free", {"unload_models": True, "free_memory": True})
    time.sleep(3)
    base = probe()
    run_once()
    loaded, loaded_rss = probe(), rss_bytes(pid)
    status, _ = _post(url + "/free", {"unload_models": True, "free_memory": True})
    assert status == 200
    freed = loaded
    for _ in range(40):  # the worker handles the flag between prompts, then collects garbage
        time.sleep(0.5)
        freed = probe()
        if freed["echomimic_modules"] == 0:
            break
    freed_rss = rss_bytes(pid)
    weights = demo_weight_bytes()
    mib = lambda b: b / 2**20  # noqa: E731
    print(f"\nembedded demo weights {mib(weights):.1f} MiB (fp32). live tensors in the server: before "
          f"{mib(base['tensor_bytes']):.1f} MiB, after a run {mib(loaded['tensor_bytes']):.1f} MiB "
          f"({loaded['echomimic_modules']} EchoMimicV2 modules), after /free {mib(freed['tensor_bytes']):.1f} MiB "
          f"({freed['echomimic_modules']} modules); RSS {mib(loaded_rss):.1f} -> {mib(freed_rss):.1f} MiB")
    assert loaded["echomimic_modules"] > 0 and freed["echomimic_modules"] == 0
    assert loaded["tensor_bytes"] - freed["tensor_bytes"] >= 0.95 * weights
    _, cached = run_once()
    assert loader not in cached  # loaded again, not taken from the cache
    again = probe()
    assert again["echomimic_modules"] == loaded["echomimic_modules"]
    assert again["tensor_bytes"] - freed["tensor_bytes"] >= 0.95 * weights
