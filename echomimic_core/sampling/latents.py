"""Initial latent noise, drawn exactly like the official ``prepare_latents_smooth``."""

from __future__ import annotations

import torch


def initial_latents(shape: tuple[int, ...], seed: int | torch.Generator, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu", init_noise_sigma: float = 1.0) -> torch.Tensor:
    """``randn`` from a CPU generator seeded with ``seed``, in ``dtype``, clamped to [-1.5, 1.5], moved to
    ``device`` and scaled by ``init_noise_sigma``.

    The official code seeds the global CPU generator (``torch.manual_seed(seed)``); a private
    ``torch.Generator('cpu').manual_seed(seed)`` yields the same stream without touching global state.
    Drawing on the CPU in the weight dtype makes the noise identical on every device.
    """
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn(tuple(shape), generator=generator, device="cpu", dtype=dtype)
    noise = noise.clamp(-1.5, 1.5).to(device)
    if init_noise_sigma != 1.0:
        noise = noise * init_noise_sigma
    return noise
