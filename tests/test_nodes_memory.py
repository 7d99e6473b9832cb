"""ComfyUI's memory manager owns the EchoMimicV2 weights: the loader's networks sit in model patchers,
``load_models_gpu`` loads them for a run, ``unload_all_models`` + dropping the node cache (what "Free
model and node cache" does) frees them, and a second run loads them again. The pack keeps no reference
of its own (the weights die with the last handle)."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch

from support.comfy import SAMPLER_ARGS, run
from support.comfy import audio_dict, comfy_dirs, image_tensor  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def live_tensor_bytes() -> int:
    """Bytes of every tensor storage the interpreter can reach (each storage counted once)."""
    gc.collect()
    seen, total = set(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance() on some torch module proxies warns
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and not obj.is_meta:
                    st = obj.untyped_storage()
                    if st.data_ptr() not in seen:
                        seen.add(st.data_ptr())
                        total += st.nbytes()
            except Exception:
                continue
    return total


def one_run(handle):
    feats, frames, _ = run("EchoMimicV2AudioEncoder", handle, audio_dict(seconds=1.0), 24.0)
    seq, _ = run("EchoMimicV2LoadPoses", "echomimic_poses/01", 24.0)
    poses, _ = run("EchoMimicV2FitPoseLength", seq, frames, "loop")
    images, _, count = run("EchoMimicV2Sampler", handle, image_tensor(size=64), feats, poses,
                           **{**SAMPLER_ARGS, "length": 12})
    return images.shape[0]


def test_comfyui_unload_frees_the_weights_and_a_second_run_reloads_them(comfy_dirs):
    import comfy.model_management as mm

    mm.unload_all_models()
    base = live_tensor_bytes()
    (handle,) = run("EchoMimicV2ModelLoader", "echomimic_v2", "normal", "fp32", "auto", "keep_loaded")
    assert one_run(handle) == 12
    loaded = [lm for lm in mm.current_loaded_models if lm.model in handle.patchers()]
    assert len(loaded) == 2  # the four networks + the audio encoder
    weights = handle.patcher.model_size() + handle.audio_patcher.model_size()
    refs = [weakref.ref(p) for net in handle.patchers() for p in net.model.parameters()]
    held = live_tensor_bytes() - base
    assert held >= weights

    # "Free model and node cache": unload_all_models, then the node cache (our handle) is dropped
    mm.unload_all_models()
    assert not any(lm.model is not None and lm.model in handle.patchers() for lm in mm.current_loaded_models)
    del handle, loaded
    freed = live_tensor_bytes() - base
    assert all(r() is None for r in refs), "something still holds the EchoMimicV2 weights"
    assert freed < held - weights * 0.99
    print(f"\nweights {weights / 2**20:.2f} MiB; live tensors over baseline: loaded {held / 2**20:.2f} MiB, "
          f"after unload + cache drop {freed / 2**20:.2f} MiB")

    # the next run loads them again
    (handle,) = run("EchoMimicV2ModelLoader", "echomimic_v2", "normal", "fp32", "auto", "keep_loaded")
    assert one_run(handle) == 12
    assert any(lm.model is handle.patcher for lm in mm.current_loaded_models)
    assert live_tensor_bytes() - base >= weights
    mm.unload_all_models()
