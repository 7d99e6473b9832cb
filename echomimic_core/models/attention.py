"""Attention processors and the reference bank of EchoMimicV2.

EchoMimicV2 changes three things about the attention of a Stable-Diffusion-1.5 transformer block
(``norm1 → attn1 → norm2 → attn2 → norm3 → ff``). Everything here is done through diffusers
*attention processors*, so the diffusers ``BasicTransformerBlock`` keeps its own forward:

* ReferenceNet blocks (:class:`ReferenceWriteProcessor`): the input of ``attn1`` (= the ``norm1``
  output, ``[b, h·w, C]``) is stored in a :class:`ReferenceBank` under the block's module path, then
  plain self-attention runs.
* Denoiser ``attn1`` (:class:`ReferenceReadProcessor`): keys/values are the concatenation of the
  block's own ``norm1`` output and the bank entry of the paired reference block, repeated for every
  frame (``[(b f), h·w + h·w, C]``); queries stay the ``norm1`` output. Batch elements whose
  ``reference_mask`` is False (the unconditional CFG half) get plain self-attention instead.
* Denoiser ``attn2`` (:class:`AudioCrossAttnProcessor`): cross-attention to the whisper tokens whose
  output is multiplied by ``audio_feature_ratio`` (3.0 in the official code); it can be muted (the
  residual is skipped) and multiplied by a per-frame spatial region mask ("partial attention" of the
  paper, used only in training).

Everything a processor needs at call time travels in one :class:`EchoAttentionContext` passed as
``cross_attention_kwargs={"echo_context": ...}``; every processor of this module accepts that keyword
so diffusers never warns about unused kwargs. There is no global state.

Attention itself is ``torch.nn.functional.scaled_dot_product_attention`` (memory-efficient / flash
kernels where torch has them); ``xformers`` is used only when explicitly enabled and installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from ..errors import ConfigError, InputError

__all__ = [
    "ReferenceBank",
    "EchoAttentionContext",
    "SelfAttnProcessor",
    "ReferenceWriteProcessor",
    "ReferenceReadProcessor",
    "AudioCrossAttnProcessor",
    "official_reference_order",
]


# ------------------------------------------------------------------------------------------------
# reference bank


class ReferenceBank:
    """Reference features of the ReferenceNet, one tensor per transformer block.

    Keys are module paths of transformer blocks (e.g. ``"down_blocks.1.attentions.0.transformer_blocks.0"``),
    values are the ``norm1`` outputs ``[b_ref, h·w, C]`` (``b_ref`` = reference batch, normally 1).
    A bank is filled by :class:`~echomimic_core.models.ReferenceUNet2DModel` and read by
    :class:`~echomimic_core.models.DenoisingUNet3DModel`; it is computed once per generation and can
    be reused for every denoising step and context window.

    Tensors are stored as produced (no detach): in training the reference UNet gets gradients through
    the bank.
    """

    def __init__(self, features: Optional[Mapping[str, torch.Tensor]] = None) -> None:
        self.features: Dict[str, torch.Tensor] = dict(features or {})

    def write(self, path: str, tensor: torch.Tensor) -> None:
        # assignment, not append: a gradient-checkpointing recompute writes the same value again
        self.features[path] = tensor

    def __getitem__(self, path: str) -> torch.Tensor:
        return self.features[path]

    def __contains__(self, path: object) -> bool:
        return path in self.features

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self) -> Iterator[str]:
        return iter(self.features)

    def keys(self):
        return self.features.keys()

    def clear(self) -> None:
        self.features.clear()

    def remap(self, pairing: Mapping[str, str]) -> "ReferenceBank":
        """A bank keyed by reader paths: ``pairing`` maps writer path → reader path
        (see :func:`echomimic_core.models.reference_pairing`; the identity for the official nets)."""
        return ReferenceBank({pairing[k]: v for k, v in self.features.items() if k in pairing})

    def to(self, *args, **kwargs) -> "ReferenceBank":
        """A new bank with every tensor passed through ``Tensor.to(*args, **kwargs)``."""
        return ReferenceBank({k: v.to(*args, **kwargs) for k, v in self.features.items()})

    def detach(self) -> "ReferenceBank":
        return ReferenceBank({k: v.detach() for k, v in self.features.items()})

    def ordered(self, paths: Iterable[str]) -> List[torch.Tensor]:
        return [self.features[p] for p in paths]

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.features.items()}
        return f"ReferenceBank({shapes})"


def official_reference_order(blocks: Iterable[Tuple[str, int]]) -> List[str]:
    """The official writer/reader pairing order of transformer blocks.

    ``blocks`` are ``(path, width)`` pairs. The official ``ReferenceAttentionControl`` lists the blocks
    in module-registration order, which in its UNets is *all down blocks, all up blocks, then the mid
    block* (the mid block attribute is assigned after the up-block list is registered), and then
    stable-sorts by width, widest first. Writer and reader lists are zipped in that order; the golden
    fixtures' ``ref_bank_XX`` use it too (fixtures README, quirk 2).
    """
    blocks = list(blocks)
    down = [b for b in blocks if b[0].startswith("down_blocks.")]
    up = [b for b in blocks if b[0].startswith("up_blocks.")]
    mid = [b for b in blocks if b[0].startswith("mid_block.")]
    rest = [b for b in blocks if b not in down and b not in up and b not in mid]
    listed = down + up + mid + rest
    return [p for p, _ in sorted(listed, key=lambda b: -b[1])]  # sorted() is stable


# ------------------------------------------------------------------------------------------------
# per-call context


@dataclass
class EchoAttentionContext:
    """Everything the processors of one UNet forward need; passed as
    ``cross_attention_kwargs={"echo_context": ctx}``. Built by the UNets' ``forward``; callers normally
    pass the individual arguments to the UNet instead of building this.

    Attributes:
        num_frames: frames ``f`` folded into the batch axis (``(b f)``); 1 for the ReferenceNet.
        reference_bank: the bank to write into (ReferenceNet) or read from (denoiser); None = no reference.
        reference_mask: ``[b]`` bool, which batch elements read the reference (CFG unconditional
            half = False). None = all of them.
        reference_dtype: dtype the bank is rounded to before the read. The official code copies the bank
            with ``.to(torch.float16)`` even in fp32 runs (quirk 4), so the default is ``torch.float16``;
            None keeps the bank's own precision. The rounded values are then used in the compute dtype.
        audio_enabled: False mutes the audio cross-attention (its residual is skipped entirely, as in
            the "audio muted" training phases). Different from feeding zero audio, which still adds
            ``ratio · to_out.bias``.
        audio_region_mask: optional ``[b, f, H, W]`` mask at latent resolution multiplying the audio
            cross-attention residual ("partial attention"); resized to each UNet level.
        region_mask_mode: ``"nearest"`` or ``"area"`` (average pooling) resize of the region mask.
        latent_size: ``(H, W)`` of the latent, used to recover each level's ``(h, w)`` from its token count.
        reference_rows: ``reference_mask`` as Python bools (when the caller gave it so): the processors split
            the batch by slicing, without a device sync.
        audio_null_rows: Python bools, True for batch elements whose audio tokens are all zero (the CFG
            unconditional half). Their audio cross-attention is a constant (see :class:`AudioCrossAttnProcessor`)
            and is not computed.
        cache: a per-generation dict for step-independent projections (reference keys/values, the zero-audio
            constant), keyed by block path. Valid only while weights and bank do not change (sampling, not
            training); None = compute everything every call.
    """

    num_frames: int = 1
    reference_bank: Optional[ReferenceBank] = None
    reference_mask: Optional[torch.Tensor] = None
    reference_dtype: Optional[torch.dtype] = torch.float16
    audio_enabled: bool = True
    audio_region_mask: Optional[torch.Tensor] = None
    region_mask_mode: str = "nearest"
    latent_size: Optional[Tuple[int, int]] = None
    reference_rows: Optional[Tuple[bool, ...]] = None
    audio_null_rows: Optional[Tuple[bool, ...]] = None
    cache: Optional[Dict[str, torch.Tensor]] = None
    _mask_cache: Dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def region_mask_for_tokens(self, num_tokens: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The region mask resized to the level with ``num_tokens = h·w`` tokens, as ``[(b f), h·w, 1]``."""
        cached = self._mask_cache.get(num_tokens)
        if cached is not None:
            return cached.to(device=device, dtype=dtype)
        mask = self.audio_region_mask
        H, W = self.latent_size if self.latent_size is not None else mask.shape[-2:]
        size = None
        h, w = H, W
        for _ in range(16):  # each level halves with ceil (stride-2 conv, padding 1)
            if h * w == num_tokens:
                size = (h, w)
                break
            h, w = (h + 1) // 2, (w + 1) // 2
        if size is None:
            raise InputError(f"no UNet level of a {H}x{W} latent has {num_tokens} tokens")
        flat = rearrange(mask.float(), "b f h w -> (b f) 1 h w")
        if tuple(flat.shape[-2:]) != size:
            if self.region_mask_mode == "nearest":
                flat = F.interpolate(flat, size=size, mode="nearest")
            elif self.region_mask_mode == "area":
                flat = F.adaptive_avg_pool2d(flat, size)
            else:
                raise ConfigError(f"region_mask_mode must be 'nearest' or 'area', not {self.region_mask_mode!r}")
        resized = rearrange(flat, "n 1 h w -> n (h w) 1")
        self._mask_cache[num_tokens] = resized
        return resized.to(device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# the attention kernel call


#: Most (sequence, head) pairs one CUDA attention kernel call gets. CUDA grids hold at most 65535 blocks along
#: y and z, where torch's memory-efficient / flash kernels put the batch and some xformers kernels batch x heads;
#: past that they fail with "invalid configuration argument" or return wrong values, depending on the version
#: (pytorch#142228, pytorch#146704, xformers#845). The motion modules' temporal attention runs
#: ``windows x 2 x h x w`` sequences: at 768x768 (96x96 latent tokens, CFG) four windows per call are 73728.
MAX_ATTENTION_BATCH = 65535


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return rearrange(x, "b n (h d) -> b h n d", h=heads)


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, backend: str = "sdpa",
                        max_batch: Optional[int] = None) -> torch.Tensor:
    """``q [B, Nq, h·d]``, ``k``/``v`` ``[B, Nk, h·d]`` -> ``[B, Nq, h·d]`` with SDPA (or xformers).

    With ``max_batch``, batches of more than ``max_batch`` (sequence, head) pairs run in several kernel calls
    (see :data:`MAX_ATTENTION_BATCH`); attention is independent per sequence, so the values do not change.
    """
    if max_batch is not None and q.shape[0] * heads > max_batch:
        step = max(1, max_batch // heads)
        return torch.cat([multihead_attention(q[i:i + step], k[i:i + step], v[i:i + step], heads, backend)
                          for i in range(0, q.shape[0], step)])
    if backend == "xformers":
        import xformers.ops  # optional dependency, checked when enabled

        q, k, v = (rearrange(t, "b n (h d) -> b n h d", h=heads).contiguous() for t in (q, k, v))
        return rearrange(xformers.ops.memory_efficient_attention(q, k, v), "b n h d -> b n (h d)")
    out = F.scaled_dot_product_attention(_split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads))
    return rearrange(out, "b h n d -> b n (h d)")


# ------------------------------------------------------------------------------------------------
# processors


class _EchoProcessorBase:
    """Shared attention core: projections of diffusers' ``Attention`` (to_q/to_k/to_v/to_out) and SDPA.

    ``backend`` is ``"sdpa"`` (default) or ``"xformers"`` (only if installed; set through the models'
    ``enable_xformers_memory_efficient_attention``).
    """

    def __init__(self, name: str = "", backend: str = "sdpa") -> None:
        self.name = name
        self.backend = backend

    def attend(self, attn, query_input: torch.Tensor, kv_input: torch.Tensor) -> torch.Tensor:
        """``[B, Nq, C] x [B, Nk, Ckv] -> [B, Nq, C]`` (to_q/to_k/to_v, attention, to_out)."""
        return self.attend_qkv(attn, attn.to_q(query_input), attn.to_k(kv_input), attn.to_v(kv_input))

    def attend_qkv(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention and ``to_out`` over already projected ``q [B, Nq, C]``, ``k``/``v`` ``[B, Nk, C]``."""
        out = multihead_attention(q, k, v, attn.heads, self.backend,
                                  max_batch=MAX_ATTENTION_BATCH if q.is_cuda else None)
        out = out.to(q.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        return out

    @staticmethod
    def _check_mask(attention_mask) -> None:
        if attention_mask is not None:
            raise NotImplementedError("EchoMimicV2 attention does not use attention masks")


class SelfAttnProcessor(_EchoProcessorBase):
    """Plain self-attention (motion modules, and any block called without a context)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 echo_context: Optional[EchoAttentionContext] = None):
        self._check_mask(attention_mask)
        kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        return self.attend(attn, hidden_states, kv)


class ReferenceWriteProcessor(_EchoProcessorBase):
    """ReferenceNet ``attn1``: store the block input (= ``norm1`` output ``[b, h·w, C]``) in
    ``echo_context.reference_bank`` under this block's path, then plain self-attention."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 echo_context: Optional[EchoAttentionContext] = None):
        self._check_mask(attention_mask)
        if echo_context is not None and echo_context.reference_bank is not None:
            echo_context.reference_bank.write(self.name, hidden_states)
        return self.attend(attn, hidden_states, hidden_states)


class ReferenceReadProcessor(_EchoProcessorBase):
    """Denoiser ``attn1``: self-attention whose keys/values also contain the reference tokens.

    ``hidden_states`` ``[(b f), n, C]`` (the ``norm1`` output); bank entry ``[b_ref, m, C]`` with
    ``b_ref`` 1 (broadcast to every batch element) or ``b``. For rows whose batch element has
    ``reference_mask`` True: ``attn(x, concat[x, bank repeated per frame])``; other rows: ``attn(x, x)``.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 echo_context: Optional[EchoAttentionContext] = None):
        self._check_mask(attention_mask)
        x = hidden_states
        ctx = echo_context
        if ctx is None or ctx.reference_bank is None:
            return self.attend(attn, x, x)
        if self.name not in ctx.reference_bank:
            raise KeyError(
                f"the reference bank has no entry for block {self.name!r}; pass the bank written by the "
                f"ReferenceUNet2DModel (remapped with reference_pairing() if the two UNets differ)")
        f = ctx.num_frames
        b = x.shape[0] // f
        if ctx.reference_rows is not None:
            return self._read_by_rows(attn, x, ctx, b, f)
        bank = self._bank(ctx, x, b)
        bank = repeat(bank, "b m c -> (b f) m c", f=f)

        mask = ctx.reference_mask
        if mask is None:
            return self.attend(attn, x, torch.cat([x, bank], dim=1))
        rows = mask.to(device=x.device, dtype=torch.bool).repeat_interleave(f)
        if bool(rows.all()):
            return self.attend(attn, x, torch.cat([x, bank], dim=1))
        if not bool(rows.any()):
            return self.attend(attn, x, x)
        out = x.new_empty(x.shape[0], x.shape[1], attn.to_out[0].out_features)
        xr = x[rows]
        out[rows] = self.attend(attn, xr, torch.cat([xr, bank[rows]], dim=1))
        xn = x[~rows]
        out[~rows] = self.attend(attn, xn, xn)
        return out

    def _bank(self, ctx: EchoAttentionContext, x: torch.Tensor, b: int) -> torch.Tensor:
        """This block's bank entry, rounded like the official read, ``[b, m, C]`` in ``x``'s dtype."""
        bank = ctx.reference_bank[self.name]
        if ctx.reference_dtype is not None:
            bank = bank.to(ctx.reference_dtype)  # official quirk 4: fp16 rounding of the bank
        bank = bank.to(device=x.device, dtype=x.dtype)
        if bank.shape[0] == 1 and b != 1:
            bank = bank.expand(b, -1, -1)
        elif bank.shape[0] != b:
            raise ValueError(f"reference bank batch {bank.shape[0]} does not match the UNet batch {b} "
                             f"(block {self.name})")
        return bank

    def _reference_kv(self, attn, ctx: EchoAttentionContext, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``to_k``/``to_v`` of the (single) bank entry ``[1, m, C]``; with ``ctx.cache`` computed once per
        generation. Exact: a linear layer acts on every token separately, so projecting the bank once equals
        projecting ``concat[x, bank]`` for every frame, window and step."""
        key = "ref_kv:" + self.name
        if ctx.cache is not None and key in ctx.cache:
            return ctx.cache[key]
        bank = self._bank(ctx, x, 1)
        kv = (attn.to_k(bank), attn.to_v(bank))
        if ctx.cache is not None:
            ctx.cache[key] = kv
        return kv

    def _read_by_rows(self, attn, x: torch.Tensor, ctx: EchoAttentionContext, b: int, f: int) -> torch.Tensor:
        """The read with a host-side mask: contiguous runs of batch elements are sliced (no sync); with
        ``ctx.cache`` the (broadcast) bank's keys/values are projected once and concatenated to each run's own,
        without it ``concat[x, bank]`` is projected as in the official code."""
        rows = ctx.reference_rows
        if len(rows) != b:
            raise ValueError(f"reference_mask has {len(rows)} entries for a batch of {b}")
        shared = ctx.reference_bank[self.name].shape[0] == 1
        parts = []
        for start, stop, read in _runs(rows):
            xs = x[start * f:stop * f]
            if not read:
                parts.append(self.attend(attn, xs, xs))
            elif shared and ctx.cache is not None:
                k_ref, v_ref = self._reference_kv(attn, ctx, xs)
                n = xs.shape[0]
                k = torch.cat([attn.to_k(xs), k_ref.expand(n, -1, -1)], dim=1)
                v = torch.cat([attn.to_v(xs), v_ref.expand(n, -1, -1)], dim=1)
                parts.append(self.attend_qkv(attn, attn.to_q(xs), k, v))
            else:
                bank = repeat(self._bank(ctx, x, b)[start:stop], "b m c -> (b f) m c", f=f)
                parts.append(self.attend(attn, xs, torch.cat([xs, bank], dim=1)))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _runs(flags: Tuple[bool, ...]) -> List[Tuple[int, int, bool]]:
    """``(start, stop, value)`` of the maximal runs of equal values in ``flags``."""
    runs, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            runs.append((start, i, bool(flags[start])))
            start = i
    return runs


class AudioCrossAttnProcessor(_EchoProcessorBase):
    """Denoiser ``attn2``: cross-attention to audio tokens ``[(b f), n_audio, 384]``, output × ``scale``.

    ``scale`` is the model's ``audio_feature_ratio`` (3.0 in the official code, hard-coded there).
    The audio path is skipped (zero residual, no compute) when ``echo_context.audio_enabled`` is False
    or no audio tokens are given. With ``echo_context.audio_region_mask`` the output is multiplied by the
    mask resized to this level (partial attention).
    """

    def __init__(self, name: str = "", backend: str = "sdpa", scale: float = 3.0) -> None:
        super().__init__(name, backend)
        self.scale = scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 echo_context: Optional[EchoAttentionContext] = None):
        self._check_mask(attention_mask)
        if encoder_hidden_states is None or (echo_context is not None and not echo_context.audio_enabled):
            # muted: a 0-dim zero keeps the block's residual add exact and costs nothing
            return hidden_states.new_zeros(())
        null = echo_context.audio_null_rows if echo_context is not None else None
        if null is not None and any(null):
            out = self._with_null_rows(attn, hidden_states, encoder_hidden_states, echo_context, null)
        else:
            out = self.attend(attn, hidden_states, encoder_hidden_states.to(hidden_states.dtype)) * self.scale
        if echo_context is not None and echo_context.audio_region_mask is not None:
            out = out * echo_context.region_mask_for_tokens(out.shape[1], out.dtype, out.device)
        return out

    def null_audio_output(self, attn, hidden_states: torch.Tensor,
                          cache: Optional[Dict[str, torch.Tensor]] = None) -> torch.Tensor:
        """The output ``[1, 1, C]`` of this cross-attention for all-zero audio tokens, for every query.

        With zero tokens every key is ``to_k(0)`` (its bias, or 0) - the same vector - so every query gives
        equal logits to all tokens and the softmax is uniform; the output is then the mean of identical values
        ``to_v(0)``, i.e. ``scale * to_out(to_v(0))``, independent of the query. Computing it from one zero
        token is therefore exact (up to float rounding of the n-term mean)."""
        key = "null_audio:" + self.name
        if cache is not None and key in cache:
            return cache[key]
        zero = hidden_states.new_zeros(1, 1, attn.to_v.in_features)
        out = attn.to_out[1](attn.to_out[0](attn.to_v(zero))) * self.scale
        if cache is not None:
            cache[key] = out
        return out

    def _with_null_rows(self, attn, x, tokens, ctx, null) -> torch.Tensor:
        f = ctx.num_frames
        if len(null) * f != x.shape[0]:
            raise ValueError(f"audio_null_rows has {len(null)} entries for {x.shape[0] // f} batch elements")
        const = self.null_audio_output(attn, x, ctx.cache)
        parts = []
        for start, stop, is_null in _runs(tuple(null)):
            xs = x[start * f:stop * f]
            if is_null:
                parts.append(const.expand(xs.shape[0], xs.shape[1], -1))
            else:
                parts.append(self.attend(attn, xs, tokens[start * f:stop * f].to(x.dtype)) * self.scale)
        return parts[0] if len(parts) == 1 else torch.cat(parts)
