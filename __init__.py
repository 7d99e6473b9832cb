"""ComfyUI entry point of the EchoMimicV2 pack.

ComfyUI imports this folder under a module name of its own and has a top-level ``nodes`` module
of its own, so the pack's node package is imported relatively. ``echomimic_core`` ships inside the
pack; the pack root goes on ``sys.path`` once so it imports whether or not the pack was
pip-installed. Outside ComfyUI (tests, plain ``import``) no node is registered and nothing fails.
"""

import importlib.util
import os
import sys

_PACK_ROOT = os.path.dirname(os.path.abspath(__file__))
if _PACK_ROOT not in sys.path:
    sys.path.insert(0, _PACK_ROOT)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

if __package__ and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
