"""Whisper audio encoder, encoder only, run with transformers' `WhisperEncoder`.

Two checkpoint layouts load into the same module:
  * the official `audio_processor/tiny.pt` (openai-whisper: ``{"dims": {...}, "model_state_dict": {...}}``);
    openai key names are mapped onto transformers' names and the config comes from ``dims``;
  * a Hugging Face folder (``config.json`` + ``model.safetensors`` / sharded safetensors /
    ``pytorch_model.bin``) of ``WhisperModel`` / ``WhisperForConditionalGeneration`` (e.g. openai/whisper-tiny).
Only the encoder tensors are kept; decoder weights are never materialised beyond the memory map.

EchoMimicV2 conditions on n_layer + 1 hidden states per position: the input of the first block (after the
positional table is added) and the output of every block, the last one taken BEFORE the final LayerNorm
(``ln_post`` / ``layer_norm``). They are captured with forward pre-hooks on the blocks and on the final norm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from ..checkpoints.state_dict import LazyTensors, read_checkpoint
from ..errors import CheckpointError, InputError, ModelFilesNotFoundError
from .mel import mel_segments

OPENAI_CHECKPOINT_NAME = "tiny.pt"
"""File name of the official checkpoint inside ``pretrained_weights/audio_processor/``."""

_BLOCK_RENAMES = (
    ("attn.query.", "self_attn.q_proj."),
    ("attn.key.", "self_attn.k_proj."),
    ("attn.value.", "self_attn.v_proj."),
    ("attn.out.", "self_attn.out_proj."),
    ("attn_ln.", "self_attn_layer_norm."),
    ("mlp.0.", "fc1."),
    ("mlp.2.", "fc2."),
    ("mlp_ln.", "final_layer_norm."),
)


def openai_to_hf_encoder_key(key: str) -> str | None:
    """Map an openai-whisper state-dict key onto transformers' WhisperEncoder names (no ``encoder.`` prefix).
    Returns None for keys that are not part of the audio encoder."""
    if not key.startswith("encoder."):
        return None
    rest = key[len("encoder.") :]
    if rest == "positional_embedding":
        return "embed_positions.weight"
    if rest.startswith("ln_post."):
        return "layer_norm." + rest[len("ln_post.") :]
    if rest.startswith(("conv1.", "conv2.")):
        return rest
    if rest.startswith("blocks."):
        _, idx, tail = rest.split(".", 2)
        for old, new in _BLOCK_RENAMES:
            if tail.startswith(old):
                return f"layers.{idx}.{new}{tail[len(old):]}"
    return "unmapped:" + key


def whisper_config_from_dims(dims: dict, ffn_dim: int | None = None):
    """A transformers WhisperConfig equivalent to openai ``ModelDimensions`` (encoder side is what matters)."""
    from transformers import WhisperConfig

    try:
        n_state, n_head = int(dims["n_audio_state"]), int(dims["n_audio_head"])
        n_vocab = int(dims.get("n_vocab", 51865))
        # The stock special-token ids only exist in the full vocabulary; tiny test vocabularies get none.
        tokens = {} if n_vocab > 50257 else dict(
            pad_token_id=None, bos_token_id=None, eos_token_id=None, decoder_start_token_id=max(n_vocab - 1, 0),
            suppress_tokens=None, begin_suppress_tokens=None,
        )
        cfg = WhisperConfig(
            **tokens,
            vocab_size=n_vocab,
            num_mel_bins=int(dims["n_mels"]),
            d_model=n_state,
            encoder_layers=int(dims["n_audio_layer"]),
            encoder_attention_heads=n_head,
            encoder_ffn_dim=int(ffn_dim or 4 * n_state),
            decoder_layers=int(dims.get("n_text_layer", 1)),
            decoder_attention_heads=int(dims.get("n_text_head", n_head)),
            decoder_ffn_dim=4 * int(dims.get("n_text_state", n_state)),
            max_source_positions=int(dims["n_audio_ctx"]),
            max_target_positions=int(dims.get("n_text_ctx", 448)),
            activation_function="gelu",
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
        )
    except Exception as exc:  # noqa: BLE001 - missing keys, wrong types, config validation
        raise CheckpointError(f"whisper checkpoint 'dims' is incomplete or invalid ({exc}): {dims}") from None
    if n_state % n_head:
        raise CheckpointError(f"whisper dims: n_audio_state {n_state} is not divisible by n_audio_head {n_head}")
    return cfg


class WhisperFeatureEncoder(nn.Module):
    """transformers WhisperEncoder + the EchoMimicV2 per-layer feature capture.

    forward(mel_segments [B, n_mels, 3000]) -> [B, n_layer + 1, 1500, d_model]
    embeddings(mel [n_mels, M]) -> [positions, n_layer + 1, d_model] (official ``audio2feat`` layout)
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        cfg = encoder.config
        self.n_layer = int(cfg.encoder_layers)
        self.d_model = int(cfg.d_model)
        self.n_mels = int(cfg.num_mel_bins)
        self.n_ctx = int(cfg.max_source_positions)
        self.segment_frames = self.n_ctx * 2
        self._captured: list[torch.Tensor] | None = None
        targets = list(self.encoder.layers) + [self.encoder.layer_norm]
        for module in targets:
            module.register_forward_pre_hook(self._capture)

    def _capture(self, module, args):
        if self._captured is not None:
            self._captured.append(args[0])

    @property
    def num_states(self) -> int:
        """Hidden states per position: n_layer + 1."""
        return self.n_layer + 1

    @property
    def tokens_per_frame(self) -> int:
        """Audio tokens per video frame after windowing: 10 * (n_layer + 1) (50 for whisper-tiny)."""
        return 10 * self.num_states

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    def forward(self, mel_segments: torch.Tensor) -> torch.Tensor:
        if mel_segments.ndim != 3 or mel_segments.shape[1:] != (self.n_mels, self.segment_frames):
            raise InputError(
                f"encoder input must be [batch, {self.n_mels}, {self.segment_frames}] log-mel segments, "
                f"got {tuple(mel_segments.shape)}; use embeddings() for a whole clip."
            )
        x = mel_segments.to(device=self.device, dtype=self.dtype)
        self._captured = []
        try:
            self.encoder(input_features=x)
            states = self._captured
        finally:
            self._captured = None
        if len(states) != self.num_states:  # pragma: no cover - guards a transformers behaviour change
            raise RuntimeError(f"captured {len(states)} encoder states, expected {self.num_states}")
        return torch.stack(states, dim=1)

    @torch.no_grad()  # not inference_mode: the trainer feeds these into autograd graphs
    def embeddings(
        self, mel: torch.Tensor, out_dtype: torch.dtype = torch.float32, batch_size: int = 1
    ) -> torch.Tensor:
        """Whole-clip log-mel [n_mels, M] -> [sum_k floor(n_valid_k / 2), n_layer + 1, d_model] on CPU.

        The mel is cut into non-overlapping 3000-frame segments (the tail zero-padded in the log-mel
        domain); each segment keeps its first floor(n_valid / 2) positions, as the official code does.
        batch_size > 1 encodes several 30 s segments per call (faster on GPUs for long clips)."""
        if mel.ndim != 2 or mel.shape[0] != self.n_mels:
            raise InputError(f"expected a log-mel [{self.n_mels}, frames], got {tuple(mel.shape)}")
        if mel.shape[1] < 2:
            raise InputError(f"log-mel has {mel.shape[1]} frame(s); at least 2 (20 ms of audio) are needed")
        segments = list(mel_segments(mel, self.segment_frames))
        parts = []
        for first in range(0, len(segments), max(1, int(batch_size))):
            group = segments[first : first + max(1, int(batch_size))]
            states = self(torch.stack([seg for seg, _ in group]))  # [B, L+1, n_ctx, D]
            for row, (_, n_valid) in zip(states, group):
                parts.append(row[:, : n_valid // 2].transpose(0, 1).to(device="cpu", dtype=out_dtype))
        return torch.cat(parts, dim=0)


def _encoder_from_state_dict(config, state: dict[str, torch.Tensor], dtype, device, source: Path):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config._attn_implementation = getattr(config, "_attn_implementation", None) or "sdpa"
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"whisper encoder weights in {source} do not match the architecture from its config: "
            f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}."
        )
    own = encoder.state_dict()
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"whisper weight {key} in {source} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(own[key].shape)} from the config."
            )
    # fp16 checkpoints (incl. the positional table) are upcast exactly; compute happens in `dtype`.
    converted = {}
    for key, tensor in state.items():
        out = tensor.to(device=device, dtype=dtype).contiguous()
        if out.data_ptr() == tensor.data_ptr():  # same storage: detach from the checkpoint's memory map
            out = out.clone()
        converted[key] = out
    state = converted
    encoder.load_state_dict(state, strict=True, assign=True)
    return WhisperFeatureEncoder(encoder)


def _load_openai(path: Path, dtype, device) -> WhisperFeatureEncoder:
    ckpt = read_checkpoint(path)  # safe (weights_only, memory-mapped); corrupt / unsafe files named
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not an openai-whisper checkpoint (a dict with 'dims' and 'model_state_dict'); "
            "use the official audio_processor/tiny.pt or a Hugging Face whisper folder."
        )
    state = {}
    for key, tensor in ckpt["model_state_dict"].items():
        new = openai_to_hf_encoder_key(key)
        if new is not None:
            state[new] = tensor
    del ckpt["model_state_dict"]
    ffn = state.get("layers.0.fc1.weight")
    config = whisper_config_from_dims(ckpt["dims"], None if ffn is None else ffn.shape[0])
    return _encoder_from_state_dict(config, state, dtype, device, path)


def _hf_encoder_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Encoder tensors of a HF whisper folder, names without prefix (conv1.weight, layers.0..., layer_norm...)."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    binary = folder / "pytorch_model.bin"
    if single.is_file() or index.is_file() or binary.is_file():
        if single.is_file():
            files = [single]
        elif index.is_file():
            files = sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
        else:
            files = [binary]
        tensors = LazyTensors(files)  # only the encoder's tensors are read (not the decoder's)
        prefix = _encoder_prefix(tensors.keys(), folder)
        return {k[len(prefix) :]: tensors.get(k) for k in tensors.keys() if k.startswith(prefix)}
    raise ModelFilesNotFoundError(
        f"no whisper weights in {folder}: expected {single.name}, {index.name} or {binary.name} next to config.json."
    )


def _encoder_prefix(keys: Iterable[str], folder: Path) -> str:
    keys = list(keys)
    for prefix in ("model.encoder.", "encoder.", ""):
        if prefix + "conv1.weight" in keys:
            return prefix
    raise CheckpointError(f"{folder} holds no whisper encoder weights (no '*encoder.conv1.weight' key).")


def _load_hf(folder: Path, dtype, device) -> WhisperFeatureEncoder:
    from transformers import WhisperConfig

    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {folder / 'config.json'}: {exc}") from None
    if raw.get("model_type") != "whisper":
        raise CheckpointError(
            f"{folder / 'config.json'} is not a whisper config (model_type {raw.get('model_type')!r})."
        )
    config = WhisperConfig.from_dict(raw)
    try:
        tensors = _hf_encoder_tensors(folder)
    except (CheckpointError, FileNotFoundError):
        raise
    except Exception as exc:  # noqa: BLE001 - a broken weight file
        raise CheckpointError(f"cannot read whisper weights in {folder}: {exc}") from None
    return _encoder_from_state_dict(config, tensors, dtype, device, folder)


def load_audio_encoder(
    path_or_folder: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> WhisperFeatureEncoder:
    """Load the whisper audio encoder from the official ``tiny.pt`` (or any openai-whisper ``.pt``), from a
    folder holding it (e.g. ``pretrained_weights/audio_processor``), or from a Hugging Face whisper folder.

    Raises ModelFilesNotFoundError naming the expected path when nothing is there, CheckpointError for
    a file that is not a whisper checkpoint."""
    path = Path(path_or_folder).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return _load_hf(path, dtype, device)
        if (path / OPENAI_CHECKPOINT_NAME).is_file():
            return _load_openai(path / OPENAI_CHECKPOINT_NAME, dtype, device)
        raise ModelFilesNotFoundError(
            f"no whisper encoder in {path}: expected {path / OPENAI_CHECKPOINT_NAME} (official EchoMimicV2 "
            f"layout: pretrained_weights/audio_processor/tiny.pt) or a Hugging Face folder with config.json "
            "and model.safetensors (openai/whisper-tiny)."
        )
    if path.is_file():
        return _load_openai(path, dtype, device)
    raise ModelFilesNotFoundError(
        f"whisper checkpoint not found: {path}. Download the official tiny.pt into "
        "pretrained_weights/audio_processor/tiny.pt (or point to an openai/whisper-tiny folder)."
    )
