"""The node edge (nodes/_edge.py): what each library error becomes when it leaves a node, checked the way
ComfyUI 0.3.64's execution.py sorts exceptions (interrupt / OOM_EXCEPTION / anything else), and one real
node run through ComfyUI's own V3 call path (class clone, locked class, EXECUTE_NORMALIZED)."""

from __future__ import annotations

import traceback

import pytest
import torch
from echomimic_core.errors import (BackendUnavailableError, CheckpointError, ConfigError, EchoMimicError, InputError,
                                   Interrupted, ModelFilesNotFoundError, NumericalError)
from support.comfy import comfy_dirs, node_module, node_package  # noqa: F401


@pytest.fixture(scope="module")
def edge():
    return node_module("_edge")


@pytest.fixture(scope="module")
def mm(edge):
    import comfy.model_management

    return comfy.model_management


@pytest.fixture(scope="module")
def raiser(edge):
    """A V3 node double whose execute raises the exception it is given, behind the edge."""
    from comfy_api.latest import io

    class RaiseNode(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="EchoMimicV2Raise", display_name="EchoMimicV2 Raise", inputs=[], outputs=[])

        @classmethod
        @edge.node_edge
        def execute(cls, exc):
            raise exc

    return RaiseNode


def raised(node, exc) -> BaseException:
    with pytest.raises(BaseException) as info:
        node.execute(exc)
    return info.value


def test_every_node_of_every_family_runs_behind_the_edge(comfy_dirs):
    pkg = node_package()
    classes = [cls for family in pkg.NODE_MODULES for cls in family.NODES]
    assert classes and all(getattr(cls.execute, "node_edge", False) for cls in classes), \
        [cls.__name__ for cls in classes if not getattr(cls.execute, "node_edge", False)]


def test_library_interrupt_becomes_comfyuis_interrupt(raiser, mm):
    out = raised(raiser, Interrupted("generation cancelled"))
    assert isinstance(out, mm.InterruptProcessingException)  # "execution_interrupted", not an error panel
    assert out.__context__ is None and out.__cause__ is None
    interrupt = mm.InterruptProcessingException()
    assert raised(raiser, interrupt) is interrupt  # ComfyUI's own passes through as it is


@pytest.mark.parametrize("exc", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                "23.6 GiB of which 1.1 GiB is free. Of the allocated memory 20 GiB ..."),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
                 "allocate 3221225472 bytes."),
    MemoryError("Unable to allocate 3.00 GiB for an array"),
], ids=["cuda", "cpu-allocator", "numpy"])
def test_out_of_memory_becomes_comfyuis_oom_with_a_hint(raiser, mm, edge, exc):
    out = raised(raiser, exc)
    assert isinstance(out, mm.OOM_EXCEPTION)  # ComfyUI unloads every model and adds its memory tip
    text = str(out)
    assert "\n" not in text and text.startswith("EchoMimicV2 Raise: out of memory (")
    assert text.endswith(edge.OOM_HINT) and "window_batch" in text and "decode_batch" in text
    assert "Of the allocated memory" not in text  # torch's paragraph cut to what and how much
    assert out.__context__ is None  # the frames holding the tensors are not kept alive


@pytest.mark.parametrize("exc", [
    InputError("the audio is empty (0 samples)"),
    ConfigError("variant must be one of ['acc', 'normal'], not 'turbo'"),
    CheckpointError("/m/vae.safetensors: not a readable VAE.\nFix: download sd-vae-ft-mse again"),
    ModelFilesNotFoundError("EchoMimicV2 model files missing in /m: denoising_unet.pth.\nExpected layout:\n  <folder>/"),
    BackendUnavailableError("mediapipe is not installed. Fix: pip install mediapipe"),
    NumericalError("denoising step 3/30 produced NaN/inf"),
    EchoMimicError("EchoMimicV2 Raise: already named. Fix: do this"),
], ids=lambda e: type(e).__name__)
def test_library_errors_become_one_clean_line_naming_the_node(raiser, mm, edge, exc):
    out = raised(raiser, exc)
    assert type(out) is edge.EchoMimicNodeError and isinstance(out, EchoMimicError)
    assert not isinstance(out, (mm.InterruptProcessingException, mm.OOM_EXCEPTION))
    text = str(out)
    assert "\n" not in text and text.startswith("EchoMimicV2 Raise: ") and text.count("EchoMimicV2 Raise") == 1
    assert " ".join(str(exc).split()).removeprefix("EchoMimicV2 Raise: ") in text  # nothing of the fix is lost
    assert out.node == "EchoMimicV2 Raise" and out.cause == type(exc).__name__
    # `from None` and more: no chained library traceback behind it for ComfyUI's log and panel
    assert out.__context__ is None and out.__cause__ is None
    assert raised(raiser, out) is out  # converted once, even through nested edges


def test_bugs_pass_through_untouched(raiser):
    bug = TypeError("unsupported operand")
    assert raised(raiser, bug) is bug
    plain = RuntimeError("expected scalar type Float but found Half")  # not an out-of-memory
    assert raised(raiser, plain) is plain


def test_edge_refuses_async_execute(edge):
    async def execute(cls):
        return None

    with pytest.raises(TypeError, match="synchronous"):
        edge.node_edge(execute)


def test_a_node_with_bad_input_raises_through_the_edge_as_comfyui_runs_it(comfy_dirs, mm, edge):
    """Fit Pose Length (trim) on a too-short sequence: the library's InputError leaves the node as one line,
    called the way execution.py calls a V3 node, with no library frame in the traceback ComfyUI shows."""
    from comfy_api.internal import make_locked_method_func

    nodes = node_package().NODE_CLASS_MAPPINGS
    seq, _ = nodes["EchoMimicV2LoadPoses"].execute("echomimic_poses/01", 24.0).args
    cls = nodes["EchoMimicV2FitPoseLength"]
    run = make_locked_method_func(cls, "EXECUTE_NORMALIZED", cls.PREPARE_CLASS_CLONE({"unique_id": "7"}))
    with pytest.raises(Exception) as info:
        run(poses=seq, frame_count=len(seq) + 10, policy="trim")
    ex = info.value
    assert not isinstance(ex, (mm.InterruptProcessingException, mm.OOM_EXCEPTION))
    message = "{}\n{}".format(ex, "")  # what execution.py puts into "exception_message"
    assert message.startswith("EchoMimicV2 Fit Pose Length: ") and message.count("\n") == 1 and "trim" in message
    assert ex.cause == "InputError"
    frames = traceback.extract_tb(ex.__traceback__)
    assert not [f for f in frames if "echomimic_core" in f.filename], [f.filename for f in frames]
    # validate_inputs is not behind the edge: it still answers with a string, raising nothing
    assert "policy must be one of" in cls.validate_inputs(policy="stretch")
