#!/usr/bin/env bash
# EchoMimicV2 on one lent GPU (H200): ours vs the official code at full size, plus the CUDA test paths.
#
# The GPU machine cannot download anything, so prepare the carried files HERE first (once; needs pip
# access to the registry and a local checkout of antgroup/echomimic_v2):
#
#     bash bench/gpu.sh --prepare /path/to/echomimic_v2      # writes .gpu_carry/ (git-ignored), ~30 MB
#
# then run on the device machine (device tool: command "bash bench/gpu.sh", carry [".gpu_carry"],
# timeout_s 560). Each part is independent (own timeout; a failure is reported, the rest still runs) and
# parts that no longer fit the time budget are skipped and listed:
#
#   setup    unpack diffusers + PyAV (the H200 image lacks both) and the official source; nvidia-smi
#   build    full-size random-weight networks from the official configs, built on the GPU (background)
#   gen_*    `generate` with the embedded demo model on CUDA in float16 and bfloat16 (load + one generation)
#   vs_acc   bench/vs_official.py, accelerated preset (6 steps, cfg 1), 120 frames at 768x768, fp16
#   vs_normal  the same with the normal preset (cfg 2.5) at NORMAL_STEPS steps (default 10, so the whole
#            script stays under 8 minutes); the summary adds the 30-step estimate from the measured
#            per-step denoise time (labelled as an estimate)
#   train_*  one training step on CUDA (stage 1 with bf16 autocast, stage 2 with fp16) on a tiny model
#
# Results: $OUT/summary.txt (tables + pass/fail list), $OUT/logs.txt, $OUT/vs_*.json.
# Test it here without a GPU:  bash bench/gpu.sh --cpu-smoke   (tiny model, 64x64, 24 frames, CPU).
# Knobs (env): NORMAL_STEPS, FRAMES, SIZE, BUDGET_S (default 470), THREADS (default 8),
#   OURS_VARIANTS ('name=--flags;name2=--flags' extra runs of ours), PYTHON.

set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRY=${GPU_CARRY:-$ROOT/.gpu_carry}
PY=${PYTHON:-python3}
MODE=gpu
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --cpu-smoke) MODE=smoke ;;
  --help|-h) sed -n 2,26p "$0"; exit 0 ;;
  "") ;;
  *) echo "usage: bash bench/gpu.sh [--prepare OFFICIAL_SRC | --cpu-smoke]" >&2; exit 2 ;;
esac

# ------------------------------------------------------------------------------------------ prepare
if [ "$MODE" = prepare ]; then
  set -e
  SRC=${2:?--prepare needs the path of an antgroup/echomimic_v2 checkout}
  [ -f "$SRC/src/pipelines/pipeline_echomimicv2.py" ] || { echo "error: $SRC is not an echomimic_v2 checkout" >&2; exit 2; }
  EXCL=$(cd "$ROOT" && git rev-parse --path-format=absolute --git-path info/exclude); mkdir -p "$(dirname "$EXCL")"
  grep -qx '/.gpu_carry/' "$EXCL" 2>/dev/null || echo '/.gpu_carry/' >> "$EXCL"
  rm -rf "$CARRY" && mkdir -p "$CARRY/media/pose" && TMPD=$(mktemp -d)
  # the H200 image has Python 3.12, torch, transformers, accelerate, safetensors, einops, numpy, opencv,
  # scipy, pyyaml, psutil, huggingface-hub (KINDS.md); it lacks diffusers and PyAV
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$TMPD/whl" diffusers==0.42.1 av==18.1.0
  mkdir -p "$TMPD/site" && for w in "$TMPD"/whl/*.whl; do (cd "$TMPD/site" && unzip -q -o "$w"); done
  # wheels recompressed with xz: the working tree that travels is limited to 64 MiB
  tar -C "$TMPD/site" -cJf "$CARRY/site.tar.xz" .
  tar -C "$SRC" -cJf "$CARRY/echomimic_v2_src.tar.xz" src configs LICENSE
  MEDIA="$ROOT/../shared/media"
  cp "$MEDIA/ref_images/echomimicv2_demo_0035.png" "$CARRY/media/ref.png"
  cp "$MEDIA/audio/speech_en_8s_16k_mono.wav" "$CARRY/media/speech.wav"
  cp -r "$MEDIA/pose/01" "$CARRY/media/pose/01"
  rm -rf "$TMPD"
  du -sh "$CARRY"; echo "tracked tree: $(git -C "$ROOT" ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes (limit 64 MiB with .gpu_carry)"
  echo 'now: device run  command="bash bench/gpu.sh"  carry=[".gpu_carry"]  timeout_s=560'
  exit 0
fi

# ------------------------------------------------------------------------------------------ run
if [ "$MODE" = smoke ]; then
  DEVICE=cpu; DTYPE=float32; MODEL_SIZE=tiny; SIZE=${SIZE:-64}; FRAMES=${FRAMES:-24}
  NORMAL_STEPS=${NORMAL_STEPS:-2}; ACC_STEPS=2; GEN_DTYPES="float32 bfloat16"; TRAIN_PRECISIONS="no"
  THREADS=${THREADS:-1}; BUDGET_S=${BUDGET_S:-2400}; PY=${PYTHON:-$ROOT/.venv/bin/python}
  LIMIT_SCALE=${LIMIT_SCALE:-5}  # a shared CPU is far slower than the GPU the limits are set for
  [ -x "$PY" ] || PY=python3
else
  DEVICE=cuda; DTYPE=float16; MODEL_SIZE=full; SIZE=${SIZE:-768}; FRAMES=${FRAMES:-120}
  NORMAL_STEPS=${NORMAL_STEPS:-10}; ACC_STEPS=6; GEN_DTYPES="float16 bfloat16"; TRAIN_PRECISIONS="bf16 fp16"
  THREADS=${THREADS:-8}; BUDGET_S=${BUDGET_S:-470}; LIMIT_SCALE=${LIMIT_SCALE:-1}
fi
OUTDIR=${OUT:-/tmp/echomimic_gpu_out}; WORK=${GPU_WORK:-/tmp/echomimic_gpu}
mkdir -p "$OUTDIR" "$WORK/logs"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$SECONDS
declare -a STATUS=()
OFFICIAL_SRC=${OFFICIAL_SRC:-$WORK/echomimic_v2_src}  # unpacked from .gpu_carry unless given
MODELS="$WORK/models_$MODEL_SIZE"; TINY="$WORK/models_tiny_train"
MEDIA_DIR="$CARRY/media"; [ -d "$MEDIA_DIR" ] || MEDIA_DIR=""
export ROOT CARRY PY MODE OFFICIAL_SRC WORK OUTDIR MODELS TINY MEDIA_DIR SIZE FRAMES DEVICE DTYPE THREADS

part() {  # part NAME LIMIT_S CMD... : timeout, log, status line; never aborts the script
  local name=$1 limit=$(($2 * LIMIT_SCALE)); shift 2
  local left=$((BUDGET_S - (SECONDS - START) - ${RESERVE_S:-0}))
  if [ "$left" -lt 25 ]; then STATUS+=("SKIP  $name (time budget spent)"); echo "=== $name: skipped (budget)"; return 0; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s, $((SECONDS - START))s in)"
  local t0=$SECONDS
  # bash -c: the command may be one of the exported functions below
  timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" > "$WORK/logs/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$WORK/logs/$name.log"
  if [ $rc -eq 0 ]; then STATUS+=("PASS  $name ($((SECONDS - t0)) s)")
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then STATUS+=("FAIL  $name: timed out after ${limit}s")
  else STATUS+=("FAIL  $name: exit $rc ($((SECONDS - t0)) s), see logs.txt"); fi
  return 0
}

setup() {
  if [ "$MODE" = gpu ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || return 1
    [ -f "$CARRY/site.tar.xz" ] || { echo "missing $CARRY/site.tar.xz: run bench/gpu.sh --prepare first"; return 1; }
    mkdir -p /tmp/site && tar -C /tmp/site -xJf "$CARRY/site.tar.xz" || return 1
  fi
  if [ ! -f "$OFFICIAL_SRC/src/pipelines/pipeline_echomimicv2.py" ]; then
    [ -f "$CARRY/echomimic_v2_src.tar.xz" ] || { echo "no official source: set OFFICIAL_SRC or run --prepare"; return 1; }
    mkdir -p "$OFFICIAL_SRC" && tar -C "$OFFICIAL_SRC" -xJf "$CARRY/echomimic_v2_src.tar.xz" || return 1
  fi
  "$PY" -c "import sys, torch, diffusers, av, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'diffusers', diffusers.__version__, 'av', av.__version__, 'transformers', transformers.__version__)"
}
[ "$MODE" = gpu ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"
export -f setup
part setup 90 setup

# the full-size folder is written while the small CUDA checks run
BUILD_LOG="$WORK/logs/build.log"
( timeout -k 10 240 "$PY" "$ROOT/bench/_bench_models.py" "$MODELS" --size "$MODEL_SIZE" --device "$DEVICE" > "$BUILD_LOG" 2>&1; echo $? > "$WORK/build.rc" ) &
BUILD_PID=$!

DEMO="$ROOT/echomimic_core/assets/demo"
for dt in $GEN_DTYPES; do
  rm -f "$WORK/gen_$dt.mp4"  # a rerun on a warm machine must not check the previous run's video
  part "gen_$dt" 120 "$PY" -m echomimic_core generate --models "$ROOT/echomimic_core/assets/demo_model" \
    --image "$DEMO/reference.png" --audio "$DEMO/audio.wav" --poses "$DEMO/poses.npz" --out "$WORK/gen_$dt.mp4" \
    --width 64 --height 64 --steps 4 --cfg 2 --seed 0 --max-frames 24 --device "$DEVICE" --dtype "$dt" --quiet
  part "gen_${dt}_frames" 60 "$PY" -c "
import sys; sys.path.insert(0, '$ROOT/bench')
from _vs_metrics import read_mp4_frames
f = read_mp4_frames('$WORK/gen_$dt.mp4'); print('frames', f.shape, 'std', float(f.std()))
assert f.shape[0] == 24 and f.std() > 1.0, 'empty or constant video'"
done

echo "=== waiting for the model build"
wait "$BUILD_PID"
tail -n 5 "$BUILD_LOG"
if [ "$(cat "$WORK/build.rc" 2>/dev/null)" = 0 ]; then STATUS+=("PASS  build ($MODEL_SIZE random weights)"); else STATUS+=("FAIL  build: exit $(cat "$WORK/build.rc" 2>/dev/null), see logs.txt"); fi

vs() {  # vs NAME PRESET STEPS CFG SEED
  local extra=() v
  [ -n "$MEDIA_DIR" ] && extra+=(--image "$MEDIA_DIR/ref.png" --audio "$MEDIA_DIR/speech.wav" --poses "$MEDIA_DIR/pose/01")
  IFS=';' read -ra _variants <<< "${OURS_VARIANTS:-}"
  for v in "${_variants[@]}"; do [ -n "$v" ] && extra+=(--variant "$v"); done
  "$PY" "$ROOT/bench/vs_official.py" --official-src "$OFFICIAL_SRC" --models "$MODELS" --work-dir "$WORK/$1" \
    --width "$SIZE" --height "$SIZE" --frames "$FRAMES" --preset "$2" --steps "$3" --cfg "$4" --seed "$5" \
    --device "$DEVICE" --dtype "$DTYPE" --threads "$THREADS" --timeout 400 --json "$OUTDIR/$1.json" "${extra[@]}"
}
export -f vs
RESERVE_S=70  # kept for the training steps
part vs_acc 200 vs vs_acc acc "$ACC_STEPS" 1.0 420
part vs_normal 330 vs vs_normal normal "$NORMAL_STEPS" 2.5 3407

# the training steps last: cheap, and the comparison matters most when time runs short
RESERVE_S=0
train_step() {  # train_step PRECISION STAGE_CONFIG
  "$PY" "$ROOT/bench/_bench_models.py" "$TINY" --size tiny --device cpu || return 1
  "$PY" -c "from train.data import write_tiny_dataset; write_tiny_dataset('$WORK/train_ds', num_clips=2, num_frames=6, size=64, tokens=20)" || return 1
  local extra=""
  [ "$2" = stage2_temporal ] && extra="--set data.clip_frames=4 --set optim.per_device_batch=1"
  "$PY" "$ROOT/train/apdh.py" "$2" --resume none --set run.output_dir="$WORK/train_$1_$2" --set run.max_steps=1 \
    --set run.checkpoint_every=0 --set run.progress_bar=false --set run.export_at_end=false --set init.from=sd \
    --set init.base_folder="$TINY" --set init.weights_folder="$TINY" --set "data.roots=[$WORK/train_ds]" \
    --set data.resolution=64 --set data.num_workers=0 --set data.audio_features=cached \
    --set optim.per_device_batch=2 --set losses.lpips.net=random_init_for_tests \
    --set "training.mixed_precision='$1'" $extra  # quoted: YAML reads a bare no as false
}
export -f train_step
set -- $TRAIN_PRECISIONS
part "train_${1}_stage1" 150 train_step "$1" stage1_1_initial_pose
if [ $# -ge 2 ]; then part "train_${2}_stage2" 150 train_step "$2" stage2_temporal; fi


# ------------------------------------------------------------------------------------------ summary
{
  echo "EchoMimicV2 GPU script ($MODE), $(date -u +%FT%TZ), $((SECONDS - START)) s"
  [ "$MODE" = gpu ] && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  for s in "${STATUS[@]}"; do echo "$s"; done
  for name in vs_acc vs_normal; do
    log="$WORK/logs/$name.log"
    [ -f "$log" ] || continue
    echo; echo "--- $name"; sed -n '/^official vs ours/,$p' "$log"
  done
  if [ -f "$OUTDIR/vs_normal.json" ]; then
    "$PY" -c "
import json, sys
d = json.load(open('$OUTDIR/vs_normal.json')); n = $NORMAL_STEPS
for r in d['runs']:
    den = next((v for k, v in (r.get('phases') or {}).items() if 'denois' in k.lower()), None)
    if den and r.get('wall'):
        print(f\"ESTIMATE {r['name']}: 30 steps ~ {r['wall'] + den * (30 / n - 1):.0f} s end to end \"
              f\"(measured {r['wall']:.0f} s at {n} steps, denoise {den / n:.2f} s/step)\")
" || true
  fi
} > "$OUTDIR/summary.txt" 2>&1
for f in "$WORK"/logs/*.log; do echo "########## $(basename "$f")"; tail -c 200000 "$f"; done > "$OUTDIR/logs.txt"
echo; cat "$OUTDIR/summary.txt"
grep -q '^FAIL' "$OUTDIR/summary.txt" && exit 1
exit 0
