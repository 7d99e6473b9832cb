"""The pack imports outside ComfyUI without registering nodes, imports inside ComfyUI without touching
sys.path (its generic folder names never shadow other packs' imports), and the CLI answers."""

import json
import subprocess
import sys

import pytest

from support.paths import REPO
from support.comfy import COMFYUI_DIR, STUBS

_IMPORT_PACK = """
import importlib.util, json, sys
{setup}
before = list(sys.path)
spec = importlib.util.spec_from_file_location("echomimic_pack", r"{init}", submodule_search_locations=[r"{root}"])
module = importlib.util.module_from_spec(spec)
sys.modules["echomimic_pack"] = module
spec.loader.exec_module(module)
out = {{"entrypoint": hasattr(module, "comfy_entrypoint"), "legacy": hasattr(module, "NODE_CLASS_MAPPINGS"),
        "path_changed": sys.path != before}}
if out["entrypoint"]:
    import asyncio, echomimic_core, nodes
    out["core"] = echomimic_core.__file__
    ext = asyncio.run(module.comfy_entrypoint())
    out["nodes"] = len(asyncio.run(ext.get_node_list()))
    out["comfy_nodes"] = nodes.__file__  # ComfyUI's own nodes.py, not the pack's nodes/
print(json.dumps(out))
"""

_COMFY_SETUP = """
sys.dont_write_bytecode = True
sys.path.insert(0, r"{comfy}")
sys.path.append(r"{stubs}")
import torchvision.transforms, torchvision.models
import comfy.options
comfy.options.enable_args_parsing(False)
from comfy.cli_args import args
args.cpu = True
"""


def _run(setup: str) -> dict:
    code = _IMPORT_PACK.format(init=REPO / "__init__.py", root=REPO, setup=setup)
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_root_package_imports_without_comfyui():
    # a fresh interpreter without ComfyUI on sys.path (other tests may have added it to this one)
    out = _run("")
    assert out["entrypoint"] is False and out["legacy"] is False and out["path_changed"] is False


@pytest.mark.slow
def test_root_package_registers_v3_nodes_in_comfyui_without_touching_sys_path():
    out = _run(_COMFY_SETUP.format(comfy=COMFYUI_DIR, stubs=STUBS))
    assert out["entrypoint"] is True and out["legacy"] is False  # V3 only (V1 mappings would win)
    assert out["path_changed"] is False
    assert out["core"].startswith(str(REPO))  # the pack's own library copy
    assert out["nodes"] >= 13
    assert out["comfy_nodes"].startswith(str(COMFYUI_DIR))


@pytest.mark.slow
def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "echomimic_core", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "check" in out and "generate" in out


def test_pyproject_is_registry_ready():
    import tomllib

    from PIL import Image

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert "comfyui" not in project["name"].lower()  # the registry asks for no "ComfyUI" in the id
    assert project["classifiers"] and project["urls"]["Repository"].startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    assert comfy["Icon"].endswith("docs/icon.png")
    with Image.open(REPO / "docs" / "icon.png") as icon:
        assert icon.width == icon.height <= 400
    # numpy 2 / opencv 5 cannot come in through the extras (mediapipe needs numpy < 2)
    extras = project["optional-dependencies"]["extras"]
    assert any(d.replace(" ", "").startswith("numpy") and "<2" in d for d in extras)
    assert any(d.startswith("opencv-contrib-python") and "<4.12" in d for d in project["dependencies"])


def test_comfyignore_keeps_development_material_out():
    lines = {line.strip() for line in (REPO / ".comfyignore").read_text().splitlines()}
    assert {"tests/", "bench/", "train/"} <= lines
    assert "example_workflows/" not in lines and "nodes/" not in lines
