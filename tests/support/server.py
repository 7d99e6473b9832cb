"""A real headless ComfyUI for the tests: the vendored ComfyUI started on a free loopback port with this
pack (and a test-only probe pack) linked in; the ``comfy`` session fixture and the HTTP helpers
(used by test_comfyui_headless and test_comfyui_browser)."""

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

HELPER = SHARED / "tools" / "comfyui_headless.sh"
PACK_NAME = "ComfyUI-EchoMimicV2"
REF_IMAGE = "echomimicv2_demo_0014.png"
SPEECH = "speech_en_3s_16k_mono.wav"
DRIVER = "driving_video.mp4"
# small enough for two shared CPU cores, big enough to cross a context-window boundary
SIZE, STEPS, LENGTH = 64, 2, 16
RUN_TIMEOUT = float(os.environ.get("ECHOMIMIC_COMFYUI_RUN_TIMEOUT", 600))


# The helper gives the server import-only torchvision/torchaudio stubs (the real wheels are CUDA builds
# here). transformers >= 5 decides "torchvision is available" from importlib.util.find_spec alone, so
# with the stub on the path it imports torchvision.transforms at module level (image_utils) and fails;
# diffusers' Transformer2DModel, which the library's UNets use, imports that chain. This start-up hook
# (test server only, put on PYTHONPATH by the fixture) tells transformers the truth: when torchvision
# is the stub, it is unavailable. It does nothing when a real torchvision is installed.
SITECUSTOMIZE = """
try:
    import torchvision as _tv
    _stub = str(getattr(_tv, "__version__", "")).endswith("comfyui-test-stub")
except Exception:
    _stub = False
if _stub:
    import transformers.utils as _tu
    import transformers.utils.import_utils as _iu

    def _unavailable(*args, **kwargs):
        return False

    for _module in (_tu, _iu):
        for _name in ("is_torchvision_available", "is_torchvision_v2_available"):
            if hasattr(_module, _name):
                setattr(_module, _name, _unavailable)
    _mapping = getattr(_iu, "BACKENDS_MAPPING", None)
    if _mapping is not None and "torchvision" in _mapping:
        _mapping["torchvision"] = (_unavailable, _mapping["torchvision"][1])
"""


# A test-only second custom node pack for the test server: one route that reports the tensors alive in
# the server process (gc-reachable storages, each counted once) and how many EchoMimicV2 networks exist,
# so the unload test measures the weights themselves (RSS alone is muddied by the allocator keeping
# freed pages).
PROBE_NAME = "echomimic_test_probe"
PROBE = """
import gc

import torch
from aiohttp import web
from server import PromptServer

NODE_CLASS_MAPPINGS = {}


@PromptServer.instance.routes.get("/echomimic_test/tensors")
async def tensors(request):
    gc.collect()
    seen, total, networks = set(), 0, 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                st = obj.untyped_storage()
                if st.data_ptr() not in seen:
                    seen.add(st.data_ptr())
                    total += st.nbytes()
            elif isinstance(obj, torch.nn.Module) and type(obj).__module__.startswith("echomimic_core.models"):
                networks += 1
        except Exception:
            continue
    return web.json_response({"tensor_bytes": total, "echomimic_modules": networks})
"""


def make_driving_video(path: Path, frames: int = 8, size: int = 256) -> None:
    """A short H.264 clip of the demo person (the reference photo, panned a little), 24 fps."""
    import av
    import numpy as np
    from PIL import Image

    img = Image.open(MEDIA / "ref_images" / "echomimicv2_demo_0047.png").convert("RGB")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            crop = img.crop((8 * i, 0, 1024 - 64 + 8 * i, 1024 - 64)).resize((size, size), Image.BICUBIC)
            frame = av.VideoFrame.from_ndarray(np.asarray(crop), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    if not HELPER.is_file():
        pytest.fail(f"ComfyUI helper not found at {HELPER}: set ECHOMIMIC_SHARED_DIR")
    base = tmp_path_factory.mktemp("comfyui_headless")
    models = base / "models"
    models.mkdir()
    make_models_dir(models)
    make_broken_models_dir(models)
    packs = base / "packs"
    packs.mkdir()
    (packs / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    (packs / PROBE_NAME).mkdir()
    (packs / PROBE_NAME / "__init__.py").write_text(PROBE)
    rt = base / "rt"
    (rt / "input" / "echomimic_poses").mkdir(parents=True)
    shutil.copy(MEDIA / "ref_images" / REF_IMAGE, rt / "input" / REF_IMAGE)
    shutil.copy(MEDIA / "audio" / SPEECH, rt / "input" / SPEECH)
    shutil.copytree(MEDIA / "pose" / "01", rt / "input" / "echomimic_poses" / "01")
    make_driving_video(rt / "input" / DRIVER)
    hooks = base / "server_hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    pythonpath = os.pathsep.join(p for p in (str(hooks), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "COMFYUI_RUNTIME_DIR": str(rt), "COMFYUI_MODELS_DIR": str(models),
           "PYTHON": sys.executable, "COMFYUI_DIR": str(SHARED / "vendor" / "ComfyUI"), "PYTHONPATH": pythonpath}
    t0 = time.time()
    out = subprocess.run(["bash", str(HELPER), "start", str(packs / PACK_NAME), str(packs / PROBE_NAME)], env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail("ComfyUI did not start:\n" + out.stdout[-2000:] + out.stderr[-4000:])
    info = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    info["startup_s"] = time.time() - t0
    info["rt"] = rt
    try:
        yield info
    finally:
        subprocess.run(["bash", str(HELPER), "stop", str(rt)], env=env, timeout=60)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()  # POST /free answers with an empty body
            return r.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def queue(comfy, prompt: dict) -> str:
    status, body = _post(comfy["COMFYUI_URL"] + "/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})
    assert status == 200, body
    assert not body.get("node_errors"), body
    return body["prompt_id"]


def wait(comfy, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = _get(f"{comfy['COMFYUI_URL']}/history/{prompt_id}").get(prompt_id)
        if entry:
            st = entry.get("status", {})
            if st.get("completed") or st.get("status_str") == "error":
                return entry
        time.sleep(0.5)
    log = Path(comfy["COMFYUI_LOG"]).read_text()[-4000:]
    pytest.fail(f"prompt {prompt_id} did not finish in {timeout:.0f}s\n{log}")


def error_message(entry: dict) -> dict:
    for kind, data in entry["status"].get("messages", []):
        if kind == "execution_error":
            return data
    return {}


def explain(entry: dict) -> str:
    err = error_message(entry)
    if not err:
        return json.dumps(entry.get("status"))[:2000]
    return (f"{err.get('node_type')} #{err.get('node_id')}: {err.get('exception_type')}: "
            f"{err.get('exception_message')}\n" + "".join(err.get("traceback", []))[-3000:])


def small(api: dict) -> dict:
    """The workflow at test size (tiny model: 64x64, a few steps, 16 frames)."""
    api = copy.deepcopy(api)
    for node in api.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EchoMimicV2Sampler", "EchoMimicV2SampleToFile"):
            inputs.update(width=SIZE, height=SIZE, steps=STEPS, length=LENGTH)
        if node["class_type"] == "EchoMimicV2PosePreview":
            inputs.update(width=SIZE, height=SIZE, max_frames=4)
    return api


def load_api(name: str) -> dict:
    return json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())


def saved_videos(comfy, entry: dict) -> list[Path]:
    paths = []
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            if item.get("filename", "").endswith(".mp4"):
                assert item["type"] == "output"
                paths.append(comfy["rt"] / "output" / item.get("subfolder", "") / item["filename"])
    return paths


def probe(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        return {"frames": frames, "width": v.codec_context.width, "height": v.codec_context.height,
                "vcodec": v.codec_context.name, "acodec": a.codec_context.name if a else None,
                "audio_duration": float(a.duration * a.time_base) if a is not None and a.duration else None}


# ----------------------------------------------------------------------------------------------------
