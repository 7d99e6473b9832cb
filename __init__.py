"""ComfyUI entry point of the EchoMimicV2 pack: ``comfy_entrypoint`` (V3 extension).

ComfyUI imports this folder under a module name of its own and has a top-level ``nodes`` module of its
own, so the pack's node package is imported relatively. Nothing is put on ``sys.path``: the pack's
generic folder names (``nodes``, ``train``, ``bench``, ``tests``) must not shadow other packs' imports.
The library ``echomimic_core`` (a unique name) is taken from a pip install of this package when that
is the same copy, else registered from the pack folder under exactly that one name (see
``_register_library``). Outside ComfyUI (tests, plain ``import``) no node is registered and nothing fails.
"""

import importlib.util
import os
import sys

_PACK_ROOT = os.path.dirname(os.path.abspath(__file__))


def _register_library() -> None:
    """Make ``import echomimic_core`` give the copy inside this pack (the nodes are written against it).

    A pip-installed copy is used only when it is this folder (``pip install -e .``); otherwise the pack's
    copy is loaded as the top-level package ``echomimic_core`` via its spec, which puts that one unique
    name into ``sys.modules`` instead of the whole pack root on ``sys.path``."""
    own = os.path.join(_PACK_ROOT, "echomimic_core", "__init__.py")
    loaded = sys.modules.get("echomimic_core")
    if loaded is not None or not os.path.isfile(own):
        return
    found = importlib.util.find_spec("echomimic_core")
    if found is not None and found.origin and os.path.samefile(found.origin, own):
        return
    spec = importlib.util.spec_from_file_location(
        "echomimic_core", own, submodule_search_locations=[os.path.dirname(own)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["echomimic_core"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["echomimic_core"]
        raise


if __package__ and importlib.util.find_spec("folder_paths") is not None:
    _register_library()
    from .nodes import comfy_entrypoint  # noqa: F401

    __all__ = ["comfy_entrypoint"]
