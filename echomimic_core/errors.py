"""Errors the library raises on purpose. Each message names the problem and the fix, so callers
(CLI, ComfyUI nodes, trainer) can show it as is instead of a traceback from deep inside torch."""


class EchoMimicError(Exception):
    """Base class of every error raised on purpose by echomimic_core."""


class InputError(EchoMimicError, ValueError):
    """Bad user input: audio, image, pose sequence, sizes, counts."""


class CheckpointError(EchoMimicError, RuntimeError):
    """Missing, corrupt or mismatching model files."""


class ModelFilesNotFoundError(CheckpointError, FileNotFoundError):
    """A required model file or folder is absent; the message lists the expected layout."""


class Interrupted(EchoMimicError):
    """A long job (sampling, training) was cancelled by its caller between two steps."""


class NumericalError(EchoMimicError, RuntimeError):
    """A computation produced NaN/inf (damaged weights, an absurd guidance scale): stopped, not written."""
