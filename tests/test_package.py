"""The pack imports outside ComfyUI without registering nodes, and the CLI answers."""

import subprocess
import sys

from conftest import REPO

_IMPORT_PACK = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("echomimic_pack", r"{init}", submodule_search_locations=[r"{root}"])
module = importlib.util.module_from_spec(spec)
sys.modules["echomimic_pack"] = module
spec.loader.exec_module(module)
print(len(module.NODE_CLASS_MAPPINGS))
"""


def test_root_package_imports_without_comfyui():
    # a fresh interpreter without ComfyUI on sys.path (other tests may have added it to this one)
    code = _IMPORT_PACK.format(init=REPO / "__init__.py", root=REPO)
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "echomimic_core", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "check" in out and "generate" in out
