"""ComfyUI nodes: thin adapters between ComfyUI types and the echomimic_core API.

One small module per node family; this file only merges their mappings and registers the model
folders (models/echomimic_v2, models/echo_mimic) with ComfyUI's folder_paths at import time.
"""

from . import _comfy

_comfy.register_model_folders()

from . import audio, demo, loader, pose, sampler, video  # noqa: E402

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _family in (loader, audio, pose, sampler, video, demo):
    NODE_CLASS_MAPPINGS.update(_family.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_family.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
