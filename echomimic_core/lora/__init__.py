"""LoRA for EchoMimicV2: the file format, the base-model fingerprint, applying (strength, stacking,
removal) to loaded networks without reloading them, and merging into full weights.

* :mod:`.fileformat` — ``echomimic-v2-lora/1`` key layout and metadata, :func:`load_lora`, :func:`save_lora`
* :mod:`.fingerprint` — the base-model hash (cheap, identical for fp32/fp16 copies)
* :mod:`.patcher` — :class:`LoraPatcher`, :func:`apply_loras`
* :mod:`.merge` — ``python -m echomimic_core.lora merge BASE_DIR LORA[:S] ... OUT_DIR``

Training lives in ``train/`` (peft adapters, exported to this format by ``train/export.py --lora``).
"""

from .fileformat import FORMAT, LoraError, LoraMetadata, LoraWeights, load_lora, read_lora_metadata, save_lora
from .fingerprint import BaseFingerprint, fingerprint
from .patcher import LoraPatcher, apply_loras, check_lora, lora_delta, parse_lora_spec

__all__ = ["FORMAT", "LoraError", "LoraMetadata", "LoraWeights", "load_lora", "read_lora_metadata", "save_lora",
           "BaseFingerprint", "fingerprint", "LoraPatcher", "apply_loras", "check_lora", "lora_delta",
           "parse_lora_spec", "check_lora_specs"]


def check_lora_specs(specs) -> None:
    """Cheap checks of ``"FILE[:STRENGTH]"`` strings before anything heavy is loaded (CLI): the file
    exists and has an EchoMimicV2 LoRA header. Raises :class:`LoraError`."""
    for spec in specs or ():
        read_lora_metadata(parse_lora_spec(spec)[0])
