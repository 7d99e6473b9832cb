"""EchoMimicV2 LoRA node: models in → models out with a LoRA at a strength; stackable.

LoRA files (``.safetensors`` written by ``train/export.py --lora``) are listed from the ``loras/``
sub-folder of every EchoMimicV2 model folder (``ComfyUI/models/echomimic_v2/loras/``).

The output is a new ECHOMIMIC_MODELS value: the same loaded networks under a clone of the input's
ComfyUI ModelPatcher carrying the LoRA as weight patches (low-rank ``LoRAAdapter`` s, strength =
the patch strength). ComfyUI applies them when it loads that clone for a run and restores the weights
when it unloads it or loads another clone, so other branches that use the input get the base model
and chaining nodes stacks the patches. The LoRA is checked against the base model's fingerprint
(``echomimic_core.lora``) when the node runs.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref

from comfy_api.latest import io

from . import _comfy
from ._edge import node_edge

NONE = "(none)"
LORA_SUBDIR = "loras"
_CACHE: dict = {}  # (path, size, mtime) -> LoraWeights: a LoRA file is read once per change
_LOCK = threading.Lock()


def list_loras() -> list[str]:
    """``(none)`` then every ``.safetensors`` under ``<model folder>/loras/`` (relative, sorted)."""
    found = []
    for _, root in _comfy.model_search_roots():
        base = os.path.join(root, LORA_SUBDIR)
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.endswith(".safetensors"):
                    rel = os.path.relpath(os.path.join(dirpath, fn), base).replace(os.sep, "/")
                    if rel not in found:
                        found.append(rel)
    return [NONE] + found


def resolve_lora(name: str) -> str:
    if os.path.isabs(name) and os.path.isfile(name):
        return name
    for _, root in _comfy.model_search_roots():
        base = os.path.join(root, LORA_SUBDIR)
        path = os.path.normpath(os.path.join(base, name))
        if os.path.commonpath([path, base]) == base and os.path.isfile(path):
            return path
    from echomimic_core.lora import LoraError

    raise LoraError(f"EchoMimicV2 LoRA: {name!r} not found: put it into ComfyUI/models/echomimic_v2/{LORA_SUBDIR}/")


def _load(path: str):
    from echomimic_core.lora import load_lora

    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()
            _CACHE[key] = load_lora(path)
        return _CACHE[key]


def lora_patches(lora) -> dict:
    """The LoRA as ComfyUI weight patches keyed like the handle's ModelPatcher state dict
    (``<network>.<module>.weight``): low-rank LoRAAdapters, so ComfyUI computes ``W + s·alpha/r·B@A``
    when it loads the weights and restores ``W`` when it unloads or loads another clone."""
    from comfy.weight_adapter.lora import LoRAAdapter

    out = {}
    for (net, mod), (a, b) in lora.modules.items():
        rank = a.shape[0]  # LoRAAdapter scales by alpha / rank: pass alpha so that equals lora.scale(rank)
        out[f"{net}.{mod}.weight"] = LoRAAdapter(set(), (b, a, lora.scale(rank) * rank, None, None, None))
    return out


_BASE = weakref.WeakKeyDictionary()  # denoising UNet -> fingerprint of its unpatched model set


def base_fingerprint(handle):
    """The base fingerprint of the handle's networks, ignoring any LoRA a loaded clone has patched in
    (ComfyUI keeps the original of every patched weight in the patcher's ``backup``)."""
    from echomimic_core.lora.fingerprint import fingerprint_state, networks_of

    den = handle.models.denoising_unet
    if den not in _BASE:
        backup = dict(getattr(handle.patcher, "backup", None) or {})
        states = {}
        for name, net in networks_of(handle.models).items():
            sd = net.state_dict()
            for key in list(sd):
                if f"{name}.{key}" in backup:
                    sd[key] = backup[f"{name}.{key}"].weight
            states[name] = sd
        _BASE[den] = fingerprint_state(states)
    return _BASE[den]


class EchoMimicV2LoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EchoMimicV2LoRA", display_name="EchoMimicV2 LoRA", category=_comfy.CATEGORY,
            description="Applies an EchoMimicV2 LoRA (train/export.py --lora) to the models at a strength. "
                        "Chain several to stack them; the input models stay unchanged for other branches.",
            inputs=[
                io.Custom(_comfy.MODELS).Input("models", tooltip="From EchoMimicV2 Model Loader (or another LoRA node)."),
                io.Combo.Input("lora_name", options=list_loras(),
                               tooltip="A .safetensors file in ComfyUI/models/echomimic_v2/loras/."),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                               display_mode=io.NumberDisplay.slider,
                               tooltip="0 = the base model exactly; 1 = as trained."),
            ],
            outputs=[io.Custom(_comfy.MODELS).Output(
                display_name="models", tooltip="The same weights with this LoRA added to the stack (ComfyUI patches).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @node_edge
    def execute(cls, models, lora_name, strength) -> io.NodeOutput:
        if lora_name == NONE:
            return io.NodeOutput(models)
        from echomimic_core.lora import LoraError, check_lora
        from echomimic_core.lora.fingerprint import networks_of

        lora = _load(resolve_lora(lora_name))
        # wrong base / modules: fail here, naming the file, before any sampling
        check_lora(lora, networks_of(models.models), base_fingerprint(models))
        out = dataclasses.replace(models, patcher=models.patcher.clone())  # the input stays unpatched
        patches = lora_patches(lora)
        added = out.patcher.add_patches(patches, float(strength))
        if len(added) != len(patches):
            raise LoraError(f"LoRA {lora.name}: {len(patches) - len(added)} weights not found in the model patcher")
        return io.NodeOutput(out)


NODES = [EchoMimicV2LoRA]
NODE_CLASS_MAPPINGS = {c.define_schema().node_id: c for c in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {c.define_schema().node_id: c.define_schema().display_name for c in NODES}
