"""Evaluation harness: the EchoMimicV2 paper's metrics (Table 2) on generated clips.

Library use (e.g. a trainer validation step)::

    from echomimic_core.eval import evaluate, Evaluator, Clip
    result = evaluate("out/", "ref/", metrics="psnr,ssim")              # folders paired by clip name
    ev = Evaluator("psnr,ssim,lpips", weights_dir="eval_weights/")      # backbones load once
    result = ev.evaluate([(Clip.from_array("val0", frames, fps=24), Clip.open("ref/val0.mp4"))])
    result["summary"]  # {"psnr": ..., "ssim": ..., "lpips": ...}

CLI: ``python -m echomimic_core.eval --pred DIR_OR_MP4 --ref DIR_OR_MP4 --metrics paper --out m.json``.
Metric definitions, backbone files and how the figures relate to the paper: README "Evaluation".
"""

from .clips import Clip, pair_clips
from .frechet import GaussianStats, frechet_distance
from .hands import hkc, hkv
from .metrics import ALL_METRICS, DEFAULT_METRICS, PAPER_METRICS, Evaluator, evaluate, parse_metrics
from .pixel import psnr_frames, ssim_frames
from .report import format_table, paper_table, write_json
from .weights import BACKBONES, find_weight

__all__ = [
    "Clip", "pair_clips", "GaussianStats", "frechet_distance", "hkc", "hkv",
    "ALL_METRICS", "DEFAULT_METRICS", "PAPER_METRICS", "Evaluator", "evaluate", "parse_metrics",
    "psnr_frames", "ssim_frames", "format_table", "paper_table", "write_json", "BACKBONES", "find_weight",
]
