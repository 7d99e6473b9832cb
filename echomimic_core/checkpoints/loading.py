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

Files are read by :mod:`.state_dict` (safetensors, or ``weights_only`` pickles; no code is ever executed).
Networks are built on the ``meta`` device and receive the loaded tensors with
``load_state_dict(assign=True)``, so loading needs about one copy of the weights. ``check_finite=True``
also scans every tensor for NaN / Inf (reported in :attr:`LoadReport.nonfinite`; ``check`` uses it).
A motion file can be loaded on its own (:func:`load_motion_modules`) and swapped into a loaded denoiser.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from ..cpu_dtype import slow_cpu_dtype_warning
from ..errors import CheckpointError, EchoMimicError
from ..models import (OFFICIAL_NOISE_SCHEDULER_KWARGS, OFFICIAL_UNET_ADDITIONAL_KWARGS, SD_VAE_FT_MSE_CONFIG,
                      DenoisingUNet3DModel, PoseEncoder, ReferenceUNet2DModel, denoising_unet_config,
                      reference_pairing, reference_unet_config)
from ..models.motion_module import MotionModules, SinusoidalPositionTable
from .layout import BASE_WEIGHT_NAMES, ModelFiles, find_model_files
from .state_dict import (LazyTensors, LoadReport, cast_floating, check_strict, expected_shapes, key_mismatch_error,
                         nonfinite_keys, read_state_dict)

__all__ = ["EchoMimicModels", "load_models", "load_inference_config", "load_reference_unet",
           "load_denoising_unet", "load_motion_modules", "load_pose_encoder", "load_vae", "base_weights"]

Device = Union[str, torch.device]


def base_weights(base_unet_dir: Optional[Path]) -> LazyTensors:
    """Lazy access to the base (SD-image-variations) unet weights: only keys that no EchoMimicV2 file
    provides are read. Its ``paths`` is empty when the folder has no weights file."""
    path = None
    if base_unet_dir is not None:
        path = next((base_unet_dir / n for n in BASE_WEIGHT_NAMES if (base_unet_dir / n).is_file()), None)
    return LazyTensors([path] if path is not None else [])


def _finite(label: str, sd: Mapping[str, torch.Tensor], report: Optional[LoadReport]) -> None:
    """Record NaN / Inf tensors of one network in ``report.nonfinite`` when ``report.check_finite``."""
    if report is not None and report.check_finite:
        bad = nonfinite_keys(sd)
        if bad:
            report.nonfinite[label] = bad


def _finish(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], dtype: torch.dtype,
            device: Device) -> torch.nn.Module:
    model.load_state_dict(cast_floating(sd, dtype), strict=True, assign=True)
    leftovers = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftovers:  # cannot happen for the shipped architectures (no non-persistent buffers)
        raise CheckpointError(f"{type(model).__name__}: tensors left uninitialised: {leftovers}")
    return model.to(device=device).eval()


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
                        device: Device = "cpu", report: Optional[LoadReport] = None) -> ReferenceUNet2DModel:
    """ReferenceNet from ``reference_unet.pth`` (strict: every key, nothing else, same shapes)."""
    with torch.device("meta"):
        model = ReferenceUNet2DModel(**reference_unet_config(base_config))
    sd = read_state_dict(path)
    check_strict("ReferenceNet (reference_unet)", Path(path), sd, expected_shapes(model))
    _finite("reference_unet", sd, report)
    return _finish(model, sd, dtype, device)


def load_pose_encoder(path: Path, dtype: torch.dtype = torch.float32, device: Device = "cpu",
                      report: Optional[LoadReport] = None) -> PoseEncoder:
    """PoseEncoder whose channel sizes are read from the shapes in ``pose_encoder.pth`` (strict)."""
    sd = read_state_dict(path)
    try:
        config = PoseEncoder.config_from_state_dict(sd)
    except (KeyError, IndexError) as exc:
        raise key_mismatch_error("PoseEncoder", Path(path), missing=[str(exc).strip("'")]) from None
    with torch.device("meta"):
        model = PoseEncoder(**config)
    check_strict("PoseEncoder", Path(path), sd, expected_shapes(model))
    _finite("pose_encoder", sd, report)
    return _finish(model, sd, dtype, device)


def load_denoising_unet(denoising_path: Path, motion_path: Path, base_unet_dir: Path,
                        unet_additional_kwargs: Optional[Mapping[str, Any]] = None,
                        dtype: torch.dtype = torch.float32, device: Device = "cpu",
                        report: Optional[LoadReport] = None) -> DenoisingUNet3DModel:
    """Denoising UNet assembled like the official ``from_pretrained_2d`` + ``load_state_dict(strict=False)``:
    ``denoising_unet.pth`` > ``motion_module.pth`` > base weights (name and shape match), with exact key
    accounting (see the module docstring)."""
    model = _meta_denoiser(base_unet_dir, unet_additional_kwargs)
    expected = expected_shapes(model)
    files = [(Path(denoising_path), read_state_dict(denoising_path), "denoising_unet"),
             (Path(motion_path), read_state_dict(motion_path), "motion_module")]
    for path, sd, _ in files:
        unexpected = [k for k in sd if k not in expected]
        mismatched = [(k, tuple(v.shape), expected[k]) for k, v in sd.items()
                      if k in expected and tuple(v.shape) != expected[k]]
        if unexpected or mismatched:
            raise key_mismatch_error(f"denoising UNet ({path.stem})", path, (), unexpected, mismatched)
    base = base_weights(base_unet_dir)
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
        where = (f"{denoising_path}, {motion_path}" + (f" and {base.paths[0]}" if base.paths else
                                                        f" (no base weights file in {base_unet_dir})"))
        raise key_mismatch_error("denoising UNet", Path(denoising_path), missing=missing,
                         fix=f"Searched: {where}. Fix: use complete official files (denoising_unet.pth holds the "
                             f"spatial weights, motion_module.pth the keys containing 'motion_modules.').")
    _finite("denoising_unet", final, report)
    return _finish(model, final, dtype, device)


def _meta_denoiser(base_unet_dir: Path, unet_additional_kwargs: Optional[Mapping[str, Any]]) -> DenoisingUNet3DModel:
    base_config = _base_config(base_unet_dir)
    try:
        config = denoising_unet_config(base_config, unet_additional_kwargs)
        with torch.device("meta"):
            return DenoisingUNet3DModel(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{base_unet_dir / 'config.json'} + unet_additional_kwargs describe a denoiser "
                              f"this library cannot build: {exc}") from None


def load_motion_modules(path: Union[str, os.PathLike], denoiser: Union[DenoisingUNet3DModel, Mapping[str, Any]],
                        dtype: Optional[torch.dtype] = None, device: Optional[Device] = None) -> MotionModules:
    """A ``motion_module.pth`` (or ``.safetensors``) as a :class:`MotionModules` model of its own.

    ``denoiser`` is a loaded denoiser (its config, dtype and device are used unless given) or a denoiser
    config. Loading is strict: every motion-module key of that config (a missing ``pos_encoder.pe`` table
    is recomputed), nothing else. Swap the result in with ``modules.apply_to(denoiser)``, which returns the
    previous modules, so a LoRA'd or retrained motion file replaces the old one without reloading the UNet.
    """
    path = Path(path)
    if isinstance(denoiser, torch.nn.Module):
        config = dict(denoiser.config)
        ref = next(denoiser.parameters())
        dtype = dtype or ref.dtype
        device = device if device is not None else ref.device
    else:
        config = dict(denoiser)
    try:
        with torch.device("meta"):
            skeleton = DenoisingUNet3DModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"this denoiser config cannot be built: {exc}") from None
    modules = MotionModules.from_denoiser(skeleton)
    del skeleton
    expected = expected_shapes(modules)
    sd = read_state_dict(path)
    tables = [k for k in expected if k.endswith("pos_encoder.pe")]
    check_strict("motion modules", path, sd, expected, allow_missing=tables)
    for key in tables:
        if key not in sd:
            sd[key] = SinusoidalPositionTable.table(expected[key][-1], expected[key][-2])
    return _finish(modules, sd, dtype or torch.float32, device if device is not None else "cpu")


def load_vae(path: Path, dtype: torch.dtype = torch.float32, device: Device = "cpu",
             report: Optional[LoadReport] = None):
    """diffusers ``AutoencoderKL`` from a folder (config.json + weights) or a single diffusers-format file."""
    from diffusers import AutoencoderKL

    path = Path(path)
    try:
        if path.is_dir():
            # local_files_only: a folder path must never be resolved as a hub id
            vae = AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
            _finite("vae", vae.state_dict(), report)
        else:
            with torch.device("meta"):
                vae = AutoencoderKL(**SD_VAE_FT_MSE_CONFIG)
            sd = read_state_dict(path)
            if any(k.startswith(("encoder.down.", "first_stage_model.")) for k in sd):
                raise CheckpointError(f"{path}: this VAE file uses the original (LDM) key names. Fix: use the "
                                      f"diffusers folder stabilityai/sd-vae-ft-mse (config.json + "
                                      f"diffusion_pytorch_model.safetensors), or pass vae_path= to it.")
            check_strict("sd-vae-ft-mse AutoencoderKL", path, sd, expected_shapes(vae))
            _finite("vae", sd, report)
            vae.load_state_dict(cast_floating(sd, dtype), strict=True, assign=True)
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
                device: Device = "cpu", *, vae_path: Optional[Union[str, os.PathLike]] = None,
                check_finite: bool = False) -> EchoMimicModels:
    """Load every EchoMimicV2 network of ``variant`` (``"normal"`` or ``"acc"``) from ``folder``.

    Args:
        folder: official ``pretrained_weights`` folder, or a ComfyUI ``models/echo_mimic`` folder.
        variant: ``"normal"`` (denoising_unet + motion_module) or ``"acc"`` (the ``_acc`` files).
        dtype / device: of the returned networks (weights are cast after reading).
        vae_path: optional explicit VAE folder or single diffusers-format file.
        check_finite: also scan every tensor for NaN / Inf (one extra pass over the weights); the
            offending keys per network are in ``load_report.nonfinite`` (nothing is raised).
    Warns:
        UserWarning: bfloat16 on a CPU that emulates it (:mod:`echomimic_core.cpu_dtype`).
    Raises:
        ModelFilesNotFoundError: files missing (the message lists the expected layout).
        CheckpointError: unreadable, unsafe or mismatching files (the message names file, keys and fix).
    """
    files = find_model_files(folder, variant)
    if vae_path is not None:
        files.vae = Path(vae_path)
    files.check()
    device = torch.device(device)
    slow = slow_cpu_dtype_warning(device, dtype)
    if slow is not None:
        warnings.warn(slow, stacklevel=2)
    cfg = load_inference_config(files.inference_config)
    base_config = _base_config(files.base_unet_dir)
    report = LoadReport(check_finite=check_finite)
    reference = load_reference_unet(files.reference_unet, base_config, dtype, device, report)
    denoiser = load_denoising_unet(files.denoising_unet, files.motion_module, files.base_unet_dir,
                                   cfg["unet_additional_kwargs"], dtype, device, report)
    pose = load_pose_encoder(files.pose_encoder, dtype, device, report)
    vae = load_vae(files.vae, dtype, device, report)
    pose_channels = pose.config.conditioning_embedding_channels
    if pose_channels != denoiser.config.block_out_channels[0]:
        raise CheckpointError(f"{files.pose_encoder}: PoseEncoder outputs {pose_channels} channels but the "
                              f"denoiser's conv_in has {denoiser.config.block_out_channels[0]}. Fix: use the "
                              f"pose_encoder.pth that belongs to these EchoMimicV2 weights.")
    try:
        pairing = reference_pairing(reference, denoiser)
    except (ValueError, CheckpointError) as exc:
        raise CheckpointError(f"{files.reference_unet} does not pair with the denoiser: {exc}") from None
    return EchoMimicModels(vae=vae, reference_unet=reference, denoising_unet=denoiser, pose_encoder=pose,
                           scheduler_kwargs=dict(cfg["noise_scheduler_kwargs"]),
                           unet_additional_kwargs=dict(cfg["unet_additional_kwargs"]),
                           audio_encoder_path=files.audio_encoder, variant=variant, dtype=dtype, device=device,
                           files=files, reference_pairing=pairing, load_report=report)
