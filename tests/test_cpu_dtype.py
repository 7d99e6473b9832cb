"""The bfloat16-on-an-emulating-CPU warning: when it fires, and that loading raises it (it is measured 4x
slower there, docs/speed.md)."""

import warnings

import pytest
import torch

from echomimic_core import cpu_dtype
from echomimic_core.cpu_dtype import slow_cpu_dtype_warning


@pytest.fixture
def cpu(monkeypatch):
    def set_cpu(machine: str, capability: str) -> None:
        monkeypatch.setattr(cpu_dtype.platform, "machine", lambda: machine)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    return set_cpu


def test_warns_for_bfloat16_on_avx2_x86(cpu):
    cpu("x86_64", "AVX2")
    message = slow_cpu_dtype_warning("cpu", torch.bfloat16)
    assert message is not None and "AVX2" in message and "float32" in message and "\n" not in message


@pytest.mark.parametrize("machine, capability, device, dtype", [
    ("x86_64", "AVX512", "cpu", torch.bfloat16),   # native oneDNN kernels
    ("x86_64", "AVX2", "cpu", torch.float32),
    ("x86_64", "AVX2", "cpu", torch.float16),      # not measured: no claim
    ("x86_64", "AVX2", "meta", torch.bfloat16),    # not a CPU
    ("aarch64", "DEFAULT", "cpu", torch.bfloat16),  # not measured: no claim
])
def test_silent_otherwise(cpu, machine, capability, device, dtype):
    cpu(machine, capability)
    assert slow_cpu_dtype_warning(device, dtype) is None


def test_load_models_warns_once(cpu, fixtures):
    from echomimic_core.checkpoints import load_models

    cpu("x86_64", "AVX2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_models(fixtures / "weights", dtype=torch.bfloat16)
    emulated = [str(w.message) for w in caught if "emulated" in str(w.message)]
    assert emulated == [slow_cpu_dtype_warning("cpu", torch.bfloat16)]
