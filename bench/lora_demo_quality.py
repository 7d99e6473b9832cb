"""Held-out quality of a LoRA on the demo model (run by hand; prints a table): the base model folder
and, per LoRA file, the base with the LoRA merged (``echomimic_core.lora.merge``), scored with
``bench/demo_quality.py``'s measurements on the same held-out clips.

    python bench/lora_demo_quality.py --data FIGURE/heldout --model echomimic_core/assets/demo_model \
        [--lora RUN/export/lora.safetensors ...] [--steps 20] [--guidance 2.0] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_quality import evaluate, format_table, make_model_source  # noqa: E402  (puts the repo on sys.path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="LoRA vs base on held-out synthetic clips")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="the base model folder")
    ap.add_argument("--lora", action="append", default=[], help="LoRA file[:strength] (repeatable: one row each)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-base", action="store_true", help="skip the base row")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from echomimic_core.lora.merge import merge_loras

    sources = {} if a.no_base else {"base": make_model_source(a.model, False, a.steps, a.seed, a.guidance)}
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(a.lora):
            out = merge_loras(a.model, [spec], Path(tmp) / f"merged{i}")
            sources[f"base + {Path(spec).name}"[:28]] = make_model_source(out, False, a.steps, a.seed, a.guidance)
        table = evaluate(a.data, sources)
    print(format_table(table))
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
