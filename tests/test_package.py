"""The pack imports outside ComfyUI without registering nodes, and the CLI answers."""

import importlib.util
import subprocess
import sys

from conftest import REPO


def test_root_package_imports_without_comfyui():
    spec = importlib.util.spec_from_file_location("echomimic_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {}


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "echomimic_core", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "check" in out
