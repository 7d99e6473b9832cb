#!/usr/bin/env bash
# Reproduce the embedded demo model (echomimic_core/assets/demo_model) and the demo inputs
# (echomimic_core/assets/demo) on CPU. See train/README.md, "Embedded demo model".
#
#   bash train/make_demo_model.sh                 # everything, into runs/demo (≈ 80 min on 2 busy CPU cores)
#   VAE=path/to/vae bash train/make_demo_model.sh # skip the VAE pretraining, use this diffusers VAE folder
#                                                 # (e.g. the shipped echomimic_core/assets/demo_model/sd-vae-ft-mse)
#
# Knobs (environment): WORK (runs/demo), PY (.venv/bin/python), OMP_NUM_THREADS (1: on a shared 2-core machine one thread was 5-10x faster than two), STAGE1_STEPS (5000), STAGE1B_STEPS (1500),
# STAGE1C_STEPS (3000), STAGE2_STEPS (150), INSTALL (1: copy the result into echomimic_core/assets).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/demo}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
STAGE1_STEPS=${STAGE1_STEPS:-5000}
STAGE1B_STEPS=${STAGE1B_STEPS:-1500}
STAGE1C_STEPS=${STAGE1C_STEPS:-3000}
STAGE2_STEPS=${STAGE2_STEPS:-150}
INSTALL=${INSTALL:-1}
mkdir -p "$WORK"

# 1. synthetic talking-figure data, 64x64, 24 fps: 56 training + 8 held-out clips of 48 frames, and a set
#    with many more figures (588 training clips of 12 frames) for stage 1b
[ -f "$WORK/data/dataset.json" ] || $PY train/synthetic.py "$WORK/data" --clips 64 --frames 48 --size 64 --seed 0 --quiet
if [ ! -f "$WORK/data_many/dataset.json" ]; then
  $PY train/synthetic.py "$WORK/data_many" --clips 600 --frames 12 --size 64 --seed 200 --heldout 0.02 --quiet
  # train/data.py caches keypoints/regions/audio windows per clip id, so ids must be unique across data
  # roots: clip_XXXX -> many_XXXX
  $PY - "$WORK/data_many" <<'PYEOF'
import json, os, sys
from pathlib import Path
root = Path(sys.argv[1]); index = json.loads((root / "dataset.json").read_text()); ids = []
for cid in index["clips"]:
    new = "many_" + cid.split("_", 1)[1]
    os.rename(root / "clips" / cid, root / "clips" / new)
    ids.append(new)
index["clips"] = ids
(root / "dataset.json").write_text(json.dumps(index, indent=1) + "\n")
PYEOF
fi

# 2. the small AutoencoderKL (train/vae.py; latent normalisation folded so 0.18215 gives unit std)
if [ -z "${VAE:-}" ]; then
  [ -f "$WORK/vae_data/dataset.json" ] || \
    $PY train/synthetic.py "$WORK/vae_data" --clips 640 --frames 6 --size 64 --seed 100 --heldout 0.02 --quiet
  [ -f "$WORK/vae/config.json" ] || \
    $PY train/vae.py "$WORK/vae_data" "$WORK/data" --eval-data "$WORK/data/heldout" --out "$WORK/vae" \
      --steps 4000 --lr 2e-3 --max-minutes 34 --log-every 200
  VAE="$WORK/vae"
fi

# 3. the starting folder: seeded tiny base UNet (32,64,64,128), seeded 1-layer 384-wide whisper, the VAE
$PY train/demo_base.py "$WORK/base" --vae "$VAE" --blocks 32,64,64,128 --seed 0

# 4. stage 1: hands-only pose + global audio attention, ReferenceNet + PoseEncoder + denoiser spatial (incl. audio)
$PY train/apdh.py train/configs/demo_stage1.yaml \
  --set init.base_folder="$WORK/base" --set data.roots="[$WORK/data]" \
  --set run.output_dir="$WORK/stage1" --set run.max_steps="$STAGE1_STEPS"

# 4b. stage 1b: same condition, continued on both sets (many more figures: unseen palettes come out right)
$PY train/apdh.py train/configs/demo_stage1b.yaml \
  --set init.base_folder="$WORK/base" --set init.weights_folder="$WORK/stage1/export" \
  --set data.roots="[$WORK/data, $WORK/data_many]" --set run.output_dir="$WORK/stage1b" \
  --set run.max_steps="$STAGE1B_STEPS"

# 4c. stage 1c: continued with a random hue rotation of reference + targets (glove colours are read from
#     the reference instead of being remembered per figure)
$PY train/apdh.py train/configs/demo_stage1c.yaml \
  --set init.base_folder="$WORK/base" --set init.weights_folder="$WORK/stage1b/export" \
  --set data.roots="[$WORK/data, $WORK/data_many]" --set run.output_dir="$WORK/stage1c" \
  --set run.max_steps="$STAGE1C_STEPS"

# 5. stage 2: motion modules on 12-frame clips, from the stage-1c export
$PY train/apdh.py train/configs/demo_stage2.yaml \
  --set init.base_folder="$WORK/base" --set init.weights_folder="$WORK/stage1c/export" \
  --set data.roots="[$WORK/data]" --set run.output_dir="$WORK/stage2" --set run.max_steps="$STAGE2_STEPS"

# 6. official layout, fp16 safetensors only (≈ 20 MB)
rm -rf "$WORK/export"
$PY train/export.py "$WORK/stage2" "$WORK/export" --safetensors --dtype fp16
rm -f "$WORK/export"/*.pth "$WORK/export/sd-image-variations-diffusers/unet/diffusion_pytorch_model."*

# 7. demo inputs: a held-out clip (new figure, held-out voice, new hand motion) of a separate small set
[ -f "$WORK/demo_clip/heldout/dataset.json" ] || \
  $PY train/synthetic.py "$WORK/demo_clip" --clips 8 --frames 96 --size 64 --seed 123 --quiet

if [ "$INSTALL" = 1 ]; then
  rm -rf echomimic_core/assets/demo_model
  cp -r "$WORK/export" echomimic_core/assets/demo_model
  $PY train/make_demo_assets.py "$WORK/demo_clip/heldout/clips/clip_0006" --out echomimic_core/assets/demo
fi

# 8. quality on the held-out clips: trained vs random init (mouth/audio correlation, hand error)
$PY bench/demo_quality.py --data "$WORK/data/heldout" --model "$WORK/export" --steps 20 --guidance 2.0 \
  --json "$WORK/demo_quality.json"
