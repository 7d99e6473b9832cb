"""An extractor that is never closed must not hang the interpreter on exit (a mediapipe graph closed
during interpreter shutdown can block forever)."""

import subprocess
import sys

import pytest

from support.paths import REPO

pytest.importorskip("mediapipe")

_SCRIPT = """
import numpy as np
from echomimic_core.pose import MediaPipeExtractor
extractor = MediaPipeExtractor()
extractor(np.zeros((64, 64, 3), np.uint8))
cached = {"mediapipe": MediaPipeExtractor()}  # module-level reference alive until shutdown
print("done")
"""


@pytest.mark.slow
def test_unclosed_extractor_does_not_hang_exit():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "done"
