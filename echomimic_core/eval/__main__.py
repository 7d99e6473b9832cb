"""``python -m echomimic_core.eval --pred DIR_OR_MP4 --ref DIR_OR_MP4 [--metrics ...] [--out metrics.json]``

Scores generated clips against references with the EchoMimicV2 paper's metrics and prints a table.
Backbone weights are local files (``--weights DIR`` or ``--weight KIND=PATH``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EchoMimicError
from .weights import BACKBONES


def build_parser() -> argparse.ArgumentParser:
    kinds = ", ".join(f"{k} ({b.names[0]})" for k, b in BACKBONES.items())
    ap = argparse.ArgumentParser(prog="python -m echomimic_core.eval", description=__doc__.splitlines()[0])
    ap.add_argument("--pred", required=True, help="generated clip (video or frames folder) or a folder of clips")
    ap.add_argument("--ref", required=True, help="reference clip or folder of clips (paired with --pred by name)")
    ap.add_argument("--metrics", default="psnr,ssim",
                    help="comma list of fid,fvd,ssim,psnr,efid,sync_d,sync_c,hkc,hkv,csim,lpips; 'paper' = "
                         "Table 2's ten, 'all' = + lpips (default psnr,ssim)")
    ap.add_argument("--out", default=None, help="write the full result (per clip + summary) as JSON here")
    ap.add_argument("--weights", default=None, help="folder with the backbone files (default $ECHOMIMIC_EVAL_WEIGHTS)")
    ap.add_argument("--weight", action="append", default=[], metavar="KIND=PATH", help=f"one backbone file; kinds: {kinds}")
    ap.add_argument("--pose", default="dwpose", choices=["dwpose", "mediapipe"],
                    help="keypoint extractor for faces/hands (csim, efid, sync, hkc, hkv)")
    ap.add_argument("--dwpose-dir", default=None, help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx (default --weights)")
    ap.add_argument("--device", default=None, help="torch device (default cuda if available)")
    ap.add_argument("--fvd-frames", type=int, default=16, help="frames per FVD window (default 16)")
    ap.add_argument("--frame-stride", type=int, default=1, help="use every k-th frame for FID (default 1)")
    ap.add_argument("--max-frames", type=int, default=None, help="score only the first N frames of each clip")
    ap.add_argument("--no-trim", action="store_true", help="frame-count mismatch is an error (default: trim to the shorter)")
    ap.add_argument("--resize", action="store_true", help="resize predictions to the reference size")
    ap.add_argument("--allow-unpaired", action="store_true", help="score the clip names common to both sides")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from .clips import pair_clips
        from .metrics import Evaluator
        from .report import format_table, write_json

        weights = {}
        for item in args.weight:
            kind, sep, path = item.partition("=")
            if not sep or kind not in BACKBONES:
                raise EchoMimicError(f"--weight wants KIND=PATH with KIND one of {', '.join(BACKBONES)}; got {item!r}")
            weights[kind] = path
        pairs = pair_clips(args.pred, args.ref, strict=not args.allow_unpaired)
        ev = Evaluator(args.metrics, weights_dir=args.weights, weights=weights, pose=args.pose,
                       dwpose_dir=args.dwpose_dir, device=args.device, fvd_frames=args.fvd_frames,
                       frame_stride=args.frame_stride, trim=not args.no_trim, resize=args.resize,
                       max_frames=args.max_frames)
        bar = None
        if not args.quiet:
            from tqdm import tqdm

            bar = tqdm(total=len(pairs), desc="evaluating", unit="clip", file=sys.stderr)
        try:
            result = ev.evaluate(pairs, progress=(lambda i, name: bar.update(1)) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        print(format_table(result))
        if args.out:
            write_json(result, args.out)
            print(f"wrote {args.out}")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EchoMimicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
