"""The EchoMimicV2 LoRA node against the vendored ComfyUI (no server): lists models/echomimic_v2/loras,
returns a clone of the input's ModelPatcher carrying the LoRA as weight patches (the input stays the base
model for other branches), stacks, strength 0 is the base exactly, and a foreign LoRA fails."""

from __future__ import annotations

import pytest
import torch

from support.lora import random_lora
from support.comfy import audio_dict, comfy_dirs, image_tensor, load_pack, node_module  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = dict(seed=7, steps=2, cfg=2.5, context_frames=12, context_overlap=3, width=64, height=64, length=4)


def run(node_id, *args, **kwargs):
    return _classes()[node_id].execute(*args, **kwargs).args


def _classes():
    import importlib

    from support.comfy import PACK_MODULE

    load_pack()
    return importlib.import_module(f"{PACK_MODULE}.nodes").NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def env(comfy_dirs):
    from echomimic_core.lora import save_lora

    (handle,) = run("EchoMimicV2ModelLoader", "echomimic_v2", "normal", "auto", "auto", "keep_loaded")
    loras = comfy_dirs["models"] / "echomimic_v2" / "loras"
    save_lora(loras / "person.safetensors", random_lora(handle.models, 21))
    save_lora(loras / "sub" / "style.safetensors", random_lora(handle.models, 22))
    foreign = random_lora(handle.models, 23)
    foreign.fingerprint = type(foreign.fingerprint)("e" * 64, "d" * 64, foreign.fingerprint.samples, torch.float32)
    save_lora(loras / "foreign.safetensors", foreign)
    feats = run("EchoMimicV2AudioEncoder", handle, audio_dict(seconds=1.0), 24.0)
    seq, _ = run("EchoMimicV2LoadPoses", "echomimic_poses/01", 24.0)
    poses = run("EchoMimicV2FitPoseLength", seq, feats[1], "loop")[0]
    return handle, feats[0], poses


def _sample(models, env):
    _, feats, poses = env
    return run("EchoMimicV2Sampler", models, image_tensor(size=64), feats, poses, **ARGS)[0]


def _lora(models, name, strength):
    return run("EchoMimicV2LoRA", models, name, strength)[0]


def test_node_is_registered_and_lists_the_lora_folder(env):
    cls = _classes()["EchoMimicV2LoRA"]
    schema = cls.GET_SCHEMA()
    assert schema.display_name == "EchoMimicV2 LoRA" and schema.category == "EchoMimicV2"
    options = node_module("lora").list_loras()
    assert options[0] == "(none)" and {"person.safetensors", "sub/style.safetensors"} <= set(options)
    assert list(cls.RETURN_TYPES) == ["ECHOMIMIC_MODELS"]


def test_lora_node_patches_a_clone_and_leaves_the_input_alone(env):
    handle = env[0]
    den = handle.models.denoising_unet
    before = {k: v.clone() for k, v in den.state_dict().items()}
    base = _sample(handle, env)
    one = _lora(handle, "person.safetensors", 1.0)
    stacked = _lora(one, "sub/style.safetensors", -0.5)
    assert one.patcher is not handle.patcher and stacked.patcher is not one.patcher
    def n_patches(h):
        return sum(len(v) for v in h.patcher.patches.values())

    assert n_patches(handle) == 0 and n_patches(stacked) > n_patches(one) > 0
    assert all(torch.equal(before[k], v) for k, v in den.state_dict().items())  # executing changed nothing
    assert _lora(handle, "(none)", 1.0) is handle
    y1 = _sample(one, env)
    assert (y1 - base).abs().max() > 0
    assert torch.equal(_sample(handle, env), base)  # the other branch still gets the base model
    assert not torch.equal(_sample(stacked, env), y1)
    assert torch.equal(_sample(_lora(handle, "person.safetensors", 0.0), env), base)
    # ComfyUI's patch = the library's patch (same file, same strength)
    from echomimic_core.lora import apply_loras

    _sample(handle, env)  # base weights loaded again
    path = env[0].folder + "/loras/person.safetensors"
    with apply_loras(handle.models, [f"{path}:1.0"]):
        assert torch.allclose(_sample(handle, env), y1, atol=1e-5)


def test_lora_node_refuses_a_foreign_lora(env):
    from echomimic_core.errors import EchoMimicError

    # a LoraError from the library, shown by the node edge as one line naming the node
    with pytest.raises(EchoMimicError, match="^EchoMimicV2 LoRA: .*foreign.safetensors was trained for base model "
                                             "dddddddddddd") as err:
        _lora(env[0], "foreign.safetensors", 1.0)
    assert err.value.cause == "LoraError"
    with pytest.raises(EchoMimicError, match="not found"):
        _lora(env[0], "nope.safetensors", 1.0)
