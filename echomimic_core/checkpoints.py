"""Finding, safely reading and assembling the EchoMimicV2 checkpoints.

One call, :func:`load_models`, turns a model folder into ready networks. It reproduces how the
official code assembles them, with exact key accounting (every missing / unexpected / mis-shaped key is
reported by name in one :class:`~echomimic_core.errors.CheckpointError`):

* **ReferenceNet**: built from ``sd-image-variations-diffusers/unet/config.json`` (no ``attn2``/``norm2``,
  no ``conv_out``), then ``reference_unet.pth`` loaded **strictly** (it must hold every key).
* **Denoising UNet**: built from the same config with 3-D block types and ``unet_additional_kwargs``;
  values come from ``denoising_unet.pth`` (wins), then ``motion_module.pth``, then the base
  SD-image-variations weights where name *and* shape match (official ``from_pretrained_2d`` +
  ``load_state_dict(strict=False)``). Documented tolerances: base-folder keys that the denoiser does not
  have, or has with another shape (the stock 768-d ``attn2.to_k/to_v``), are ignored; a motion-module
  ``pos_encoder.pe`` table absent from every file is recomputed (it is deterministic, as in the official
  class). Keys of ``denoising_unet.pth``/``motion_module.pth`` that the model does not have, or with
  another shape, and model keys found in no file are errors.
* **PoseEncoder**: channel sizes read from the shapes in ``pose_encoder.pth``; loaded strictly.
* **VAE**: diffusers ``AutoencoderKL`` from ``sd-vae-ft-mse/``.
* The audio encoder is only located (``audio_encoder_path``); ``echomimic_core.audio`` loads it.

The official inference config (``unet_additional_kwargs`` and ``noise_scheduler_kwargs`` of
``configs/inference/inference_v2.yaml``) is built in; an ``inference_config.json`` next to the weights
overrides it. Every other size comes from the files.

Files may be ``.pth``/``.pt``/``.bin``/``.ckpt`` (read with ``torch.load(weights_only=True, mmap=True)``:
no code is ever executed) or ``.safetensors``. Networks are built on the ``meta`` device and receive the
loaded tensors with ``load_state_dict(assign=True)``, so loading needs about one copy of the weights.

Layouts understood (see :func:`find_model_files`): the official ``pretrained_weights/`` folder, and the
ComfyUI EchoMimic pack layout ``models/echo_mimic/{unet/, audio_processor/whisper_tiny.pt, v2/*.pth}``
with the VAE in ``models/vae/sd-vae-ft-mse/`` (or a single diffusers-format VAE file).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .errors import CheckpointError, EchoMimicError, ModelFilesNotFoundError
from .models import (OFFICIAL_NOISE_SCHEDULER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS, DenoisingUNet3DModel,
                     PoseEncoder, ReferenceUNet2DModel, denoising_unet_config, reference_pairing,
                     reference_unet_config)
from .models.motion_module import SinusoidalPositionTable

__all__ = [
    "VARIANTS", "WEIGHT_SUFFIXES", "ModelFiles", "EchoMimicModels", "LoadReport", "find_model_files",
    "read_state_dict", "save_state_dict", "load_inference_config", "load_reference_unet",
    "load_denoising_unet", "load_pose_encoder", "load_vae", "load_models", "report_folder", "expected_layout",
]

#: checkpoint suffixes, in order of preference when several exist
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")

#: variant → (denoiser stem, motion-module stem); the ReferenceNet and PoseEncoder are shared
VARIANTS: Dict[str, Tuple[str, str]] = {
    "normal": ("denoising_unet", "motion_module"),
    "acc": ("denoising_unet_acc", "motion_module_acc"),
}

BASE_UNET_DIRS = (("sd-image-variations-diffusers", "unet"), ("unet",))
BASE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
AUDIO_FILES = (("audio_processor", "tiny.pt"), ("audio_processor", "whisper_tiny.pt"), ("whisper_tiny.pt",),
               ("tiny.pt",))

#: stabilityai/sd-vae-ft-mse config.json, used only for a single diffusers-format VAE file without config
SD_VAE_FT_MSE_CONFIG: Dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 256,
    "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4,
}

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


def _find_weight(directory: Path, stem: str) -> Optional[Path]:
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
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ModelFilesNotFoundError(f"model folder {folder} does not exist.\n" + expected_layout(variant))
    candidates = [folder, folder / "pretrained_weights", folder / "v2", folder / "echo_mimic" / "v2",
                  folder / "echomimic_v2"]
    weights_dir = next((d for d in candidates if _find_weight(d, "reference_unet") is not None), folder)
    roots = _unique([weights_dir, folder, weights_dir.parent, folder / "echo_mimic", folder.parent])
    den, mm = VARIANTS[variant]
    files = ModelFiles(folder=folder, variant=variant, weights_dir=weights_dir,
                       reference_unet=_find_weight(weights_dir, "reference_unet"),
                       denoising_unet=_find_weight(weights_dir, den),
                       motion_module=_find_weight(weights_dir, mm),
                       pose_encoder=_find_weight(weights_dir, "pose_encoder"))
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


# ------------------------------------------------------------------------------------------------
# safe reading / writing


def _corrupt(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: cannot be read as a checkpoint ({detail}). The file is probably truncated or corrupt "
        f"(an interrupted download?). Fix: download it again and compare its size with the source.")


def _unwrap(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "module"):
            if key in obj and isinstance(obj[key], Mapping) and len(obj) <= 3:
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in obj.items()):
        raise CheckpointError(f"{path}: not a plain state dict (name → tensor). Fix: point to the original "
                              f"EchoMimicV2 file, or re-export it with torch.save(model.state_dict(), path).")
    return OrderedDict(obj)


def read_state_dict(path: Union[str, os.PathLike]) -> "OrderedDict[str, torch.Tensor]":
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True, mmap=True)``.

    Raises:
        ModelFilesNotFoundError: the file does not exist.
        CheckpointError: truncated/corrupt file, or a pickle that needs code execution (refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFilesNotFoundError(f"checkpoint file {path} not found")
    if path.stat().st_size == 0:
        raise _corrupt(path, "the file is empty")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return OrderedDict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise _corrupt(path, f"{type(exc).__name__}: {exc}") from None
    is_zip = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(
                f"{path}: refused to load — the file is a pickle that contains Python objects or code, not only "
                f"tensors, and loading it would execute code. EchoMimicV2 checkpoints are plain tensor dicts. "
                f"Fix: use the original file from the official source; if you trust this file, re-save it as "
                f"a plain state dict or convert it with `python -m echomimic_core.convert` from a trusted "
                f"environment.") from None
        raise _corrupt(path, f"UnpicklingError: {exc}") from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, AttributeError,
            IndexError, TypeError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return _unwrap(obj, path)


def save_state_dict(state_dict: Mapping[str, torch.Tensor], path: Union[str, os.PathLike],
                    metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write ``state_dict`` atomically as ``.safetensors`` or a plain ``torch.save`` pickle (other suffixes).
    Shared / non-contiguous tensors are copied so safetensors accepts them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            seen: set = set()
            clean = OrderedDict()
            for k, v in state_dict.items():
                v = v.detach().cpu()
                ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
                if not v.is_contiguous() or ptr in seen or v.numel() != v.untyped_storage().nbytes() // max(
                        v.element_size(), 1):
                    v = v.contiguous().clone()
                if ptr is not None:
                    seen.add(ptr)
                clean[k] = v
            save_file(clean, tmp, metadata=metadata or {"format": "pt"})
        else:
            torch.save(OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items()), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


class _BaseWeights:
    """Lazy access to the base (SD-image-variations) unet weights: only keys that no EchoMimicV2 file
    provides are read."""

    def __init__(self, directory: Optional[Path]) -> None:
        self.path = None
        if directory is not None:
            self.path = next((directory / n for n in BASE_WEIGHT_NAMES if (directory / n).is_file()), None)
        self._handle = None
        self._keys: set = set()
        self._dict: Optional[Dict[str, torch.Tensor]] = None

    def _open(self) -> None:
        if self._handle is not None or self._dict is not None or self.path is None:
            return
        if self.path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                self._handle = safe_open(str(self.path), framework="pt", device="cpu")
                self._keys = set(self._handle.keys())
            except Exception as exc:
                raise _corrupt(self.path, f"{type(exc).__name__}: {exc}") from None
        else:
            self._dict = read_state_dict(self.path)

    def shape(self, key: str) -> Optional[Tuple[int, ...]]:
        self._open()
        if self._handle is not None:
            return tuple(self._handle.get_slice(key).get_shape()) if key in self._keys else None
        if self._dict is not None and key in self._dict:
            return tuple(self._dict[key].shape)
        return None

    def get(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key) if self._handle is not None else self._dict[key]


# ------------------------------------------------------------------------------------------------
# key accounting


@dataclass
class LoadReport:
    """Where the denoiser's values came from (key counts), for logs and ``check``."""

    sources: Dict[str, int] = field(default_factory=dict)
    recomputed: List[str] = field(default_factory=list)


def _fmt_keys(keys: Sequence[str]) -> str:
    return "\n".join(f"    {k}" for k in keys)


def _key_error(what: str, path: Path, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
               mismatched: Sequence[Tuple[str, tuple, tuple]] = (), fix: str = "") -> CheckpointError:
    parts = [f"{path}: does not match the {what} architecture."]
    if missing:
        parts.append(f"  {len(missing)} missing key(s) (needed by the model, found in no file):\n{_fmt_keys(missing)}")
    if unexpected:
        parts.append(f"  {len(unexpected)} unexpected key(s) (in the file, not in the model):\n{_fmt_keys(unexpected)}")
    if mismatched:
        lines = [f"    {k}: file {list(fs)} vs model {list(ms)}" for k, fs, ms in mismatched]
        parts.append(f"  {len(mismatched)} shape mismatch(es):\n" + "\n".join(lines))
    parts.append(fix or "Fix: use the matching official EchoMimicV2 file (a file from another model or "
                        "another EchoMimic version does not fit), and check the folder's config.json / "
                        "inference_config.json.")
    return CheckpointError("\n".join(parts))


def _check_strict(what: str, path: Path, sd: Mapping[str, torch.Tensor], expected: Mapping[str, tuple]) -> None:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [(k, tuple(sd[k].shape), expected[k]) for k in expected
                  if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or mismatched:
        raise _key_error(what, path, missing, unexpected, mismatched)


def _cast(sd: Mapping[str, torch.Tensor], dtype: torch.dtype) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items())


def _finish(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], dtype: torch.dtype,
            device: Union[str, torch.device]) -> torch.nn.Module:
    model.load_state_dict(_cast(sd, dtype), strict=True, assign=True)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:  # cannot happen for the shipped architectures (no non-persistent buffers)
        raise CheckpointError(f"{type(model).__name__}: tensors left uninitialised: {leftovers}")
    return model.to(device=device).eval()


def _expected(model: torch.nn.Module) -> "OrderedDict[str, tuple]":
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------
# per-network loaders


def load_inference_config(path: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """``{"unet_additional_kwargs", "noise_scheduler_kwargs"}``: the built-in official values, each section
    replaced by the one in ``path`` when present (an ``inference_config.json``, or the official
    ``configs/inference/inference_v2.yaml`` of a checkout of the official repository)."""
    cfg = {"unet_additional_kwargs": json.loads(json.dumps(OFFICIAL_UNET_ADDITIONAL_KWARGS)),
           "noise_scheduler_kwargs": dict(OFFICIAL_NOISE_SCHEDULER_KWARGS)}
    if path is not None:
        try:
            text = Path(path).read_text()
            if Path(path).suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("the top level is not a mapping")
        except Exception as exc:  # OSError, JSON / YAML syntax errors
            raise CheckpointError(f"{path}: not a readable inference config ({type(exc).__name__}: {exc}). "
                                  f"Fix: repair or delete it (the built-in official values are used without "
                                  f"it).") from None
        for key in cfg:
            if key in data:
                cfg[key] = data[key]
    return cfg


def _base_config(base_unet_dir: Path) -> Dict[str, Any]:
    path = base_unet_dir / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable unet config ({exc}). Fix: download "
                              f"sd-image-variations-diffusers/unet/config.json again.") from None


def load_reference_unet(path: Path, base_config: Mapping[str, Any], dtype: torch.dtype = torch.float32,
                        device: Union[str, torch.device] = "cpu") -> ReferenceUNet2DModel:
    """ReferenceNet from ``reference_unet.pth`` (strict: every key, nothing else, same shapes)."""
    with torch.device("meta"):
        model = ReferenceUNet2DModel(**reference_unet_config(base_config))
    sd = read_state_dict(path)
    _check_strict("ReferenceNet (reference_unet)", Path(path), sd, _expected(model))
    return _finish(model, sd, dtype, device)


def load_pose_encoder(path: Path, dtype: torch.dtype = torch.float32,
                      device: Union[str, torch.device] = "cpu") -> PoseEncoder:
    """PoseEncoder whose channel sizes are read from the shapes in ``pose_encoder.pth`` (strict)."""
    sd = read_state_dict(path)
    try:
        config = PoseEncoder.config_from_state_dict(sd)
    except (KeyError, IndexError) as exc:
        raise _key_error("PoseEncoder", Path(path), missing=[str(exc).strip("'")]) from None
    with torch.device("meta"):
        model = PoseEncoder(**config)
    _check_strict("PoseEncoder", Path(path), sd, _expected(model))
    return _finish(model, sd, dtype, device)


def load_denoising_unet(denoising_path: Path, motion_path: Path, base_unet_dir: Path,
                        unet_additional_kwargs: Optional[Mapping[str, Any]] = None,
                        dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu",
                        report: Optional[LoadReport] = None) -> DenoisingUNet3DModel:
    """Denoising UNet assembled like the official ``from_pretrained_2d`` + ``load_state_dict(strict=False)``:
    ``denoising_unet.pth`` > ``motion_module.pth`` > base weights (name and shape match), with exact key
    accounting (see the module docstring)."""
    base_config = _base_config(base_unet_dir)
    try:
        config = denoising_unet_config(base_config, unet_additional_kwargs)
        with torch.device("meta"):
            model = DenoisingUNet3DModel(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{base_unet_dir / 'config.json'} + unet_additional_kwargs describe a denoiser "
                              f"this library cannot build: {exc}") from None
    expected = _expected(model)
    files = [(Path(denoising_path), read_state_dict(denoising_path), "denoising_unet"),
             (Path(motion_path), read_state_dict(motion_path), "motion_module")]
    for path, sd, _ in files:
        unexpected = [k for k in sd if k not in expected]
        mismatched = [(k, tuple(v.shape), expected[k]) for k, v in sd.items()
                      if k in expected and tuple(v.shape) != expected[k]]
        if unexpected or mismatched:
            raise _key_error(f"denoising UNet ({path.stem})", path, (), unexpected, mismatched)
    base = _BaseWeights(base_unet_dir)
    final: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    report = report if report is not None else LoadReport()
    missing: List[str] = []
    for key, shape in expected.items():
        for path, sd, label in files:
            if key in sd:
                final[key] = sd[key]
                report.sources[label] = report.sources.get(label, 0) + 1
                break
        else:
            if base.shape(key) == shape:
                final[key] = base.get(key)
                report.sources["base_unet"] = report.sources.get("base_unet", 0) + 1
            elif key.endswith("pos_encoder.pe"):
                final[key] = SinusoidalPositionTable.table(shape[-1], shape[-2])
                report.recomputed.append(key)
            else:
                missing.append(key)
    if missing:
        where = (f"{denoising_path}, {motion_path}" + (f" and {base.path}" if base.path else
                                                        f" (no base weights file in {base_unet_dir})"))
        raise _key_error("denoising UNet", Path(denoising_path), missing=missing,
                         fix=f"Searched: {where}. Fix: use complete official files (denoising_unet.pth holds the "
                             f"spatial weights, motion_module.pth the keys containing 'motion_modules.').")
    return _finish(model, final, dtype, device)


def load_vae(path: Path, dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu"):
    """diffusers ``AutoencoderKL`` from a folder (config.json + weights) or a single diffusers-format file."""
    from diffusers import AutoencoderKL

    path = Path(path)
    try:
        if path.is_dir():
            # local_files_only: a folder path must never be resolved as a hub id
            vae = AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
        else:
            with torch.device("meta"):
                vae = AutoencoderKL(**SD_VAE_FT_MSE_CONFIG)
            sd = read_state_dict(path)
            if any(k.startswith(("encoder.down.", "first_stage_model.")) for k in sd):
                raise CheckpointError(f"{path}: this VAE file uses the original (LDM) key names. Fix: use the "
                                      f"diffusers folder stabilityai/sd-vae-ft-mse (config.json + "
                                      f"diffusion_pytorch_model.safetensors), or pass vae_path= to it.")
            _check_strict("sd-vae-ft-mse AutoencoderKL", path, sd, _expected(vae))
            vae.load_state_dict(_cast(sd, dtype), strict=True, assign=True)
    except EchoMimicError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: the VAE (sd-vae-ft-mse) could not be loaded ({type(exc).__name__}: "
                              f"{str(exc)[:300]}). Fix: download stabilityai/sd-vae-ft-mse again "
                              f"(config.json + diffusion_pytorch_model.safetensors).") from None
    return vae.to(device=device).eval()


# ------------------------------------------------------------------------------------------------
# everything at once


@dataclass
class EchoMimicModels:
    """The loaded EchoMimicV2 networks and their settings (returned by :func:`load_models`)."""

    vae: Any = field(repr=False)
    reference_unet: ReferenceUNet2DModel = field(repr=False)
    denoising_unet: DenoisingUNet3DModel = field(repr=False)
    pose_encoder: PoseEncoder = field(repr=False)
    scheduler_kwargs: Dict[str, Any]
    unet_additional_kwargs: Dict[str, Any]
    audio_encoder_path: Path
    variant: str
    dtype: torch.dtype
    device: torch.device
    files: Optional[ModelFiles] = None
    reference_pairing: Dict[str, str] = field(default_factory=dict)
    load_report: Optional[LoadReport] = None

    def networks(self) -> Dict[str, torch.nn.Module]:
        return {"vae": self.vae, "reference_unet": self.reference_unet, "denoising_unet": self.denoising_unet,
                "pose_encoder": self.pose_encoder}

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None
           ) -> "EchoMimicModels":
        """Move/cast every network in place; returns self."""
        for net in self.networks().values():
            net.to(device=device, dtype=dtype)
        if device is not None:
            self.device = torch.device(device)
        if dtype is not None:
            self.dtype = dtype
        return self


def load_models(folder: Union[str, os.PathLike], variant: str = "normal", dtype: torch.dtype = torch.float32,
                device: Union[str, torch.device] = "cpu", *, vae_path: Optional[Union[str, os.PathLike]] = None
                ) -> EchoMimicModels:
    """Load every EchoMimicV2 network of ``variant`` (``"normal"`` or ``"acc"``) from ``folder``.

    Args:
        folder: official ``pretrained_weights`` folder, or a ComfyUI ``models/echo_mimic`` folder.
        variant: ``"normal"`` (denoising_unet + motion_module) or ``"acc"`` (the ``_acc`` files).
        dtype / device: of the returned networks (weights are cast after reading).
        vae_path: optional explicit VAE folder or single diffusers-format file.
    Raises:
        ModelFilesNotFoundError: files missing (the message lists the expected layout).
        CheckpointError: unreadable, unsafe or mismatching files (the message names file, keys and fix).
    """
    files = find_model_files(folder, variant)
    if vae_path is not None:
        files.vae = Path(vae_path)
    files.check()
    device = torch.device(device)
    cfg = load_inference_config(files.inference_config)
    base_config = _base_config(files.base_unet_dir)
    report = LoadReport()
    reference = load_reference_unet(files.reference_unet, base_config, dtype, device)
    denoiser = load_denoising_unet(files.denoising_unet, files.motion_module, files.base_unet_dir,
                                   cfg["unet_additional_kwargs"], dtype, device, report)
    pose = load_pose_encoder(files.pose_encoder, dtype, device)
    vae = load_vae(files.vae, dtype, device)
    pose_channels = pose.config.conditioning_embedding_channels
    if pose_channels != denoiser.config.block_out_channels[0]:
        raise CheckpointError(f"{files.pose_encoder}: PoseEncoder outputs {pose_channels} channels but the "
                              f"denoiser's conv_in has {denoiser.config.block_out_channels[0]}. Fix: use the "
                              f"pose_encoder.pth that belongs to these EchoMimicV2 weights.")
    try:
        pairing = reference_pairing(reference, denoiser)
    except ValueError as exc:
        raise CheckpointError(f"{files.reference_unet} does not pair with the denoiser: {exc}") from None
    return EchoMimicModels(vae=vae, reference_unet=reference, denoising_unet=denoiser, pose_encoder=pose,
                           scheduler_kwargs=dict(cfg["noise_scheduler_kwargs"]),
                           unet_additional_kwargs=dict(cfg["unet_additional_kwargs"]),
                           audio_encoder_path=files.audio_encoder, variant=variant, dtype=dtype, device=device,
                           files=files, reference_pairing=pairing, load_report=report)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def report_folder(folder: Path, load: bool) -> int:
    """Print, per variant, which files are found or missing under ``folder`` and (``load``) whether the
    networks load. Returns 0 when the normal variant is complete (and loads), else 1. The ``acc`` variant
    is optional."""
    status = 0
    folder = Path(folder)
    for variant in VARIANTS:
        try:
            files = find_model_files(folder, variant)
        except EchoMimicError as exc:
            print(f"  [{variant}] {exc}")
            return 1
        names = files.describe()
        print(f"  variant {variant}: weights in {files.weights_dir}")
        for key in ModelFiles.REQUIRED + ("inference_config",):
            value = getattr(files, key)
            mark = "found  " if value is not None else ("missing" if key != "inference_config" else "absent ")
            print(f"    {mark} {names[key]:<52} {value if value is not None else ''}")
        missing = files.missing()
        if missing:
            if variant == "normal":
                status = 1
                print(f"    -> incomplete: {', '.join(missing)}")
                print("       " + expected_layout(variant).replace("\n", "\n       "))
            else:
                print(f"    -> not installed (optional): {', '.join(missing)}")
            continue
        if not load:
            print("    -> all files found (not loaded: --no-load)")
            continue
        try:
            models = load_models(folder, variant=variant, dtype=torch.float16, device="cpu")
        except EchoMimicError as exc:
            status = 1
            print(f"    -> LOAD FAILED: {exc}")
            continue
        counts = {k: _count(v) for k, v in models.networks().items()}
        print("    -> loads OK (float16, cpu): " + ", ".join(f"{k} {v:,} params" for k, v in counts.items()))
        src = models.load_report.sources if models.load_report else {}
        print(f"       denoiser keys by source: {src}")
        del models
    return status
