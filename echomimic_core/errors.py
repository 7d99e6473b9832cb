"""Errors the library raises on purpose. Each message names the problem and the fix, so callers
(CLI, ComfyUI nodes, trainer) can show it as is instead of a traceback from deep inside torch.

The one hierarchy of the project::

    EchoMimicError
    ├── InputError (ValueError)            bad user input: audio, image, pose sequence, sizes, counts
    ├── ConfigError (ValueError)           a config / settings value the library cannot honour
    ├── CheckpointError (RuntimeError)     missing, corrupt, unsafe or mismatching model files
    │   ├── ModelFilesNotFoundError (FileNotFoundError)
    │   └── NotAStateDictError             a readable file that is not a name → tensor dict
    ├── BackendUnavailableError (RuntimeError)  a pose backend's package or model files are absent
    ├── NumericalError (RuntimeError)      NaN/inf in a computation: stopped, nothing written
    └── Interrupted                        a long job was cancelled between two steps

The built-in bases (``ValueError`` …) stay, so ``except ValueError`` written against older versions
still catches them. ComfyUI nodes convert these at their edge (nodes/_edge.py); the trainer raises them for config and
file problems.
"""

__all__ = ["EchoMimicError", "InputError", "ConfigError", "CheckpointError", "ModelFilesNotFoundError",
           "NotAStateDictError", "BackendUnavailableError", "NumericalError", "Interrupted"]


class EchoMimicError(Exception):
    """Base class of every error raised on purpose by echomimic_core."""


class InputError(EchoMimicError, ValueError):
    """Bad user input: audio, image, pose sequence, sizes, counts."""


class ConfigError(EchoMimicError, ValueError):
    """A configuration value (model config, training config, settings) that cannot be honoured."""


class CheckpointError(EchoMimicError, RuntimeError):
    """Missing, corrupt or mismatching model files."""


class ModelFilesNotFoundError(CheckpointError, FileNotFoundError):
    """A required model file or folder is absent; the message lists the expected layout."""


class NotAStateDictError(CheckpointError):
    """The file reads safely but holds something other than a plain ``name → tensor`` mapping."""


class BackendUnavailableError(EchoMimicError, RuntimeError):
    """A pose-extraction backend cannot run here (package not installed or model files absent)."""


class Interrupted(EchoMimicError):
    """A long job (sampling, training) was cancelled by its caller between two steps."""


class NumericalError(EchoMimicError, RuntimeError):
    """A computation produced NaN/inf (damaged weights, an absurd guidance scale): stopped, not written."""
