"""Finding, safely reading, assembling and writing the EchoMimicV2 checkpoints.

* :mod:`.layout` — where the files are (official ``pretrained_weights/`` and ComfyUI layouts);
* :mod:`.state_dict` — the one safe reader / writer of weight files and the key accounting;
* :mod:`.loading` — the networks, :class:`EchoMimicModels`, :func:`load_models`, motion modules on their own;
* :mod:`.saving` — :func:`save_models` (official layout; used by the trainer's export and ``convert``).

``from echomimic_core.checkpoints import load_models, find_model_files, EchoMimicModels, …`` is the public
import path.
"""

from .layout import (BASE_WEIGHT_NAMES, DOWNLOAD_HINT, NETWORK_STEMS, VARIANTS, ModelFiles, expected_layout,
                     find_model_files, find_weight)
from .loading import (EchoMimicModels, base_weights, load_denoising_unet, load_inference_config, load_models,
                      load_motion_modules, load_pose_encoder, load_reference_unet, load_vae)
from .saving import INFERENCE_CONFIG_NAME, save_inference_config, save_models
from .state_dict import (PICKLE_SUFFIXES, WEIGHT_SUFFIXES, LazyTensors, LoadReport, check_strict, expected_shapes,
                         key_mismatch_error, nonfinite_keys, read_checkpoint, read_state_dict, save_checkpoint,
                         save_state_dict, verify_identical)

__all__ = [
    "VARIANTS", "NETWORK_STEMS", "WEIGHT_SUFFIXES", "PICKLE_SUFFIXES", "BASE_WEIGHT_NAMES", "DOWNLOAD_HINT",
    "ModelFiles", "EchoMimicModels", "LoadReport", "LazyTensors", "find_model_files", "find_weight",
    "expected_layout", "read_checkpoint", "read_state_dict", "save_state_dict", "save_checkpoint", "verify_identical",
    "nonfinite_keys", "check_strict", "expected_shapes", "key_mismatch_error", "load_inference_config",
    "save_inference_config", "INFERENCE_CONFIG_NAME", "load_reference_unet", "load_denoising_unet",
    "load_motion_modules", "load_pose_encoder", "load_vae", "base_weights", "load_models", "save_models",
]


def __getattr__(name: str):
    # ``report_folder`` (the ``check`` printer) moved to the CLI; kept importable from here.
    if name == "report_folder":
        from ..commands.check import report_folder

        return report_folder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
