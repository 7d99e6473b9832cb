"""Where the EchoMimicV2 files live: layout discovery and the expected-layout message.

Layouts understood (see :func:`find_model_files`): the official ``pretrained_weights/`` folder, and the
ComfyUI EchoMimic pack layout ``models/echo_mimic/{unet/, audio_processor/whisper_tiny.pt, v2/*.pth}``
with the VAE in ``models/vae/sd-vae-ft-mse/`` (or a single diffusers-format VAE file). Any ``.pth`` may be
replaced by a ``.safetensors`` (or ``.pt``/``.bin``/``.ckpt``) of the same stem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, ModelFilesNotFoundError
from .state_dict import WEIGHT_SUFFIXES

__all__ = ["VARIANTS", "NETWORK_STEMS", "ModelFiles", "find_model_files", "find_weight", "expected_layout",
           "DOWNLOAD_HINT", "BASE_WEIGHT_NAMES"]

#: variant → (denoiser stem, motion-module stem); the ReferenceNet and PoseEncoder are shared
VARIANTS: Dict[str, Tuple[str, str]] = {
    "normal": ("denoising_unet", "motion_module"),
    "acc": ("denoising_unet_acc", "motion_module_acc"),
}

#: stems of the four EchoMimicV2 files of the normal variant (what :func:`save_models` writes)
NETWORK_STEMS = ("reference_unet", "denoising_unet", "motion_module", "pose_encoder")

BASE_UNET_DIRS = (("sd-image-variations-diffusers", "unet"), ("unet",))
BASE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
AUDIO_FILES = (("audio_processor", "tiny.pt"), ("audio_processor", "whisper_tiny.pt"), ("whisper_tiny.pt",),
               ("tiny.pt",))

DOWNLOAD_HINT = ("Get the files from huggingface.co/BadToBest/EchoMimicV2 (pretrained_weights/), "
                 "lambdalabs/sd-image-variations-diffusers (unet/), stabilityai/sd-vae-ft-mse and the OpenAI "
                 "whisper tiny.pt, or run `python -m echomimic_core check --models DIR` to see what is missing.")


def expected_layout(variant: str = "normal") -> str:
    den, mm = VARIANTS.get(variant, VARIANTS["normal"])
    return (
        "Expected layout (official pretrained_weights/; .safetensors may replace any .pth):\n"
        "  <folder>/\n"
        f"    reference_unet.pth  {den}.pth  {mm}.pth  pose_encoder.pth\n"
        "    sd-image-variations-diffusers/unet/config.json + diffusion_pytorch_model.safetensors (or .bin)\n"
        "    sd-vae-ft-mse/config.json + diffusion_pytorch_model.safetensors (or .bin)\n"
        "    audio_processor/tiny.pt\n"
        "    inference_config.json   (optional; overrides the built-in inference_v2.yaml values)\n"
        "or the ComfyUI EchoMimic layout:\n"
        "  models/echo_mimic/unet/config.json + weights, models/echo_mimic/audio_processor/whisper_tiny.pt,\n"
        f"  models/echo_mimic/v2/{{reference_unet,{den},{mm},pose_encoder}}.pth, models/vae/sd-vae-ft-mse/\n"
        f"{DOWNLOAD_HINT}")


# ------------------------------------------------------------------------------------------------
# layout discovery


@dataclass
class ModelFiles:
    """Where each file of one variant was found (``None`` = not found)."""

    folder: Path
    variant: str
    weights_dir: Path
    reference_unet: Optional[Path] = None
    denoising_unet: Optional[Path] = None
    motion_module: Optional[Path] = None
    pose_encoder: Optional[Path] = None
    base_unet_dir: Optional[Path] = None
    vae: Optional[Path] = None
    audio_encoder: Optional[Path] = None
    inference_config: Optional[Path] = None

    REQUIRED = ("reference_unet", "denoising_unet", "motion_module", "pose_encoder", "base_unet_dir", "vae",
                "audio_encoder")

    def describe(self) -> Dict[str, str]:
        den, mm = VARIANTS[self.variant]
        return {"reference_unet": "reference_unet.pth", "denoising_unet": f"{den}.pth",
                "motion_module": f"{mm}.pth", "pose_encoder": "pose_encoder.pth",
                "base_unet_dir": "sd-image-variations-diffusers/unet/ (config.json)",
                "vae": "sd-vae-ft-mse/ (config.json + weights)", "audio_encoder": "audio_processor/tiny.pt",
                "inference_config": "inference_config.json (optional)"}

    def missing(self) -> List[str]:
        names = self.describe()
        return [names[k] for k in self.REQUIRED if getattr(self, k) is None]

    def check(self) -> "ModelFiles":
        missing = self.missing()
        if missing:
            raise ModelFilesNotFoundError(
                f"EchoMimicV2 model files missing in {self.folder} (variant {self.variant!r}): "
                + ", ".join(missing) + ".\n" + expected_layout(self.variant))
        return self


def find_weight(directory: Path, stem: str) -> Optional[Path]:
    for suffix in WEIGHT_SUFFIXES:
        p = directory / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _unique(paths: Iterable[Path]) -> List[Path]:
    out: List[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def _find_vae(roots: Sequence[Path]) -> Optional[Path]:
    for root in roots:
        for d in (root / "sd-vae-ft-mse", root / "vae" / "sd-vae-ft-mse", root.parent / "vae" / "sd-vae-ft-mse"):
            if (d / "config.json").is_file():
                return d
    for root in roots:  # ComfyUI models/vae/: a single diffusers-format file
        vae_dir = root.parent / "vae"
        if vae_dir.is_dir():
            for p in sorted(vae_dir.iterdir()):
                if p.is_file() and "sd-vae-ft-mse" in p.name and p.suffix in (".safetensors", ".bin", ".pth"):
                    return p
    return None


def _find_audio(roots: Sequence[Path]) -> Optional[Path]:
    for root in roots:
        for parts in AUDIO_FILES:
            p = root.joinpath(*parts)
            if p.is_file():
                return p
        for d in (root / "audio_processor", root / "audio_processor" / "whisper-tiny", root / "whisper-tiny"):
            if (d / "config.json").is_file():  # a Hugging Face whisper folder
                return d
    return None


def find_model_files(folder: Union[str, os.PathLike], variant: str = "normal") -> ModelFiles:
    """Locate the files of ``variant`` under ``folder`` (official or ComfyUI pack layout).

    Missing files are ``None``; call :meth:`ModelFiles.check` to raise
    :class:`~echomimic_core.errors.ModelFilesNotFoundError`.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFilesNotFoundError(f"model folder {folder} does not exist.\n" + expected_layout(variant))
    candidates = [folder, folder / "pretrained_weights", folder / "v2", folder / "echo_mimic" / "v2",
                  folder / "echomimic_v2"]
    weights_dir = next((d for d in candidates if find_weight(d, "reference_unet") is not None), folder)
    roots = _unique([weights_dir, folder, weights_dir.parent, folder / "echo_mimic", folder.parent])
    den, mm = VARIANTS[variant]
    files = ModelFiles(folder=folder, variant=variant, weights_dir=weights_dir,
                       reference_unet=find_weight(weights_dir, "reference_unet"),
                       denoising_unet=find_weight(weights_dir, den),
                       motion_module=find_weight(weights_dir, mm),
                       pose_encoder=find_weight(weights_dir, "pose_encoder"))
    for root in roots:
        for parts in BASE_UNET_DIRS:
            d = root.joinpath(*parts)
            if (d / "config.json").is_file():
                files.base_unet_dir = d
                break
        if files.base_unet_dir is not None:
            break
    files.vae = _find_vae(roots)
    files.audio_encoder = _find_audio(roots)
    for p in [root / "inference_config.json" for root in roots[:2]] + \
             [root / "configs" / "inference" / "inference_v2.yaml" for root in (folder, weights_dir.parent)]:
        if p.is_file():
            files.inference_config = p
            break
    return files
