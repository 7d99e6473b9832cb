"""ComfyUI nodes: thin V3 (``comfy_api.latest``) adapters between ComfyUI types and the echomimic_core API.

One small module per node family; each exposes ``NODES = [V3 classes]``. ``NODE_MODULES`` below is the
one list of families: a new family (e.g. ``gesture``, ``lora``) is one import and one entry there.
This file also registers the model folders (models/echomimic_v2, models/echo_mimic) with ComfyUI's
folder_paths at import time and builds the ComfyExtension that ``comfy_entrypoint`` returns.
"""

from comfy_api.latest import ComfyExtension, io

from . import _comfy

_comfy.register_model_folders()

from . import audio, demo, gesture, loader, lora, pose, sampler, video  # noqa: E402

# every node family of the pack, in the order the Add Node menu lists them
NODE_MODULES = (loader, audio, pose, sampler, video, demo, gesture, lora)

NODES: list[type[io.ComfyNode]] = [cls for family in NODE_MODULES for cls in family.NODES]
# the same classes keyed by node id, for code that reads the legacy dicts (tests, workflow generator)
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _comfy.legacy_mappings(NODES)


class EchoMimicV2Extension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> EchoMimicV2Extension:
    return EchoMimicV2Extension()


__all__ = ["NODES", "NODE_MODULES", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "comfy_entrypoint"]
