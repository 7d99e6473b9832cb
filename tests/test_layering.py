"""The DESIGN "never" rules, pinned by scanning every import statement (ast, no import executed):
echomimic_core never imports ComfyUI, nodes/ or train/; nodes/ and train/ never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support.paths import REPO

# top-level module names that belong to ComfyUI itself (custom nodes import these)
COMFY = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
         "execution", "node_helpers", "latent_preview"}
FORBIDDEN = {
    "echomimic_core": COMFY | {"train"},
    "nodes": {"train"},
    "train": COMFY,
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute top-level module) of every import in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    rel_parts = path.relative_to(REPO).with_suffix("").parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside its own package tree
                base = rel_parts[:-node.level] if node.level <= len(rel_parts) else ()
                top = base[0] if base else (node.module or "").split(".")[0]
                # `from .. import x` at the pack root (root __init__) is the pack itself, not a forbidden name
                out.append((node.lineno, top))
            elif node.module:
                out.append((node.lineno, node.module.split(".")[0]))
    return out


def _files(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_never_rules(package):
    bad = []
    for path in _files(package):
        for line, top in _imports(path, package):
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {top}")
    assert not bad, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(bad)


def test_the_scanner_sees_imports():
    """The scan finds plain, from- and function-local imports (so an empty result means something)."""
    files = _files("nodes")
    assert files and any(top == "echomimic_core" for p in files for _, top in _imports(p, "nodes"))
    assert any(top == "folder_paths" for p in files for _, top in _imports(p, "nodes"))
