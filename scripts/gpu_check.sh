#!/usr/bin/env bash
# The device checks of the CUDA side in one call (a GPU machine's time is short): environment, the operator's
# build, the GPU tests, a memory check of the RoI kernels on bad RoIs, kernel and detection timings, and
# training on CUDA: images/s by data-loader workers, and float32 against bfloat16 / float16 mixed precision on
# the default recipe (raccoon, validation then test AP).
#
#   bash scripts/gpu_prepare.sh                 # here: .gpu/ with the wheels the device lacks, raccoon, proposals
#   device run: bash scripts/gpu_check.sh checks  # there, with carry [".gpu"]; about 6 minutes; logs in $OUT
#   device run: bash scripts/gpu_check.sh amp     # then, on the same warm machine: about 5 minutes
set -u
STAGE=${1:-checks}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 FASTRCNN_EXTENSIONS_DIR=/tmp/fastrcnn-ops MAX_JOBS=16 NO_COLOR=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
F="python3 -m fastrcnn_cli"
# run from a checkout (not installed): the shipped model and example image by path
export FASTRCNN_WEIGHTS=$PWD/weights/shapes-efficientnet-lite0.pt
IMAGE=examples/shapes-1.jpg
D=.gpu/data/raccoon
C=.gpu/cache/raccoon
R=/tmp/runs
T0=$(date +%s)
log() { echo "== +$(( $(date +%s) - T0 ))s $*"; }

if [ "$STAGE" = debug ]; then
  { timeout 240 $F build-ops --cuda; timeout 60 python3 scripts/gpu_bad_batch.py; echo "exit $?"
    timeout 120 cuda-gdb -batch -ex run -ex bt --args python3 scripts/gpu_bad_batch.py 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -45
  } > "$OUT/segfault.txt" 2>&1
  tail -30 "$OUT/segfault.txt"
  mkdir -p $R
  log "one training run, watched"
  timeout 110 $F train $D --backbone efficientnet-lite0 --device cuda --proposal-cache $C --runs-dir $R --name dbg \
    --iterations 60 --eval-every 0 --workers 4 --log-every 5 > "$R/dbg.json" 2> "$OUT/train_err.txt" &
  TP=$!
  for s in 30 60 90; do sleep 30; log "py-spy at ${s}s"
    timeout 20 /tmp/site/bin/py-spy dump --pid "$(pgrep -f '^python3 -m fastrcnn_cli train' | head -1)" 2>&1 | head -40; done > "$OUT/pyspy.txt" 2>&1
  wait $TP; echo "train exit $?" >> "$OUT/train_err.txt"
  cp $R/dbg/metrics.csv "$OUT/dbg_metrics.csv" 2>/dev/null
  tail -25 "$OUT/train_err.txt"; cat "$OUT/dbg_metrics.csv" 2>/dev/null | cut -c1-160
  log "detect stages"
  timeout 80 $F benchmark --device cuda -S stages --proposer native --runs 10 --image $IMAGE > "$OUT/bench_stages.txt" 2>&1
  tail -25 "$OUT/bench_stages.txt"
  log done
  exit 0
fi

if [ "$STAGE" = checks ]; then
{
  log environment
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, torchvision, cv2, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'torchvision', torchvision.__version__, 'opencv', cv2.__version__, 'numpy', numpy.__version__, 'cores', __import__('os').cpu_count())"
  log build; time timeout 240 $F build-ops --cuda
} > "$OUT/setup.txt" 2>&1
tail -4 "$OUT/setup.txt"

log "sanitizer (background) and GPU tests"
(timeout 180 compute-sanitizer --tool memcheck --print-limit 20 python3 scripts/gpu_bad_rois.py > "$OUT/sanitizer.txt" 2>&1;
 echo "exit $?" >> "$OUT/sanitizer.txt") &
SAN=$!
timeout 180 python3 -m pytest -q -p no:cacheprovider -rs tests/test_roi_pool_cuda_build.py > "$OUT/tests.txt" 2>&1
tail -3 "$OUT/tests.txt"
wait $SAN; tail -3 "$OUT/sanitizer.txt"

log "kernel check and timing"
{
  timeout 100 python3 scripts/gpu_roi_pool_check.py --runs 30 --warmup 10 --markdown
  for dt in float32 bfloat16; do  # with the argmax-free inference form
    timeout 50 python3 -m fastrcnn_cli.ops.bench --device cuda --runs 30 --warmup 10 --dtype $dt --no-reference; done
  log "detect stages on CUDA (native Selective Search: the device's OpenCV has no contrib)"
  timeout 100 $F benchmark --device cuda -S stages,roipool,head --proposer native --runs 10 --image $IMAGE
} > "$OUT/bench.txt" 2>&1
tail -5 "$OUT/bench.txt"

fi

log "training throughput by workers (150 iterations, float32; then bfloat16)"
# train SECONDS NAME FLAGS...: one run, its JSON summary in $R/NAME.json, one line printed
summary() { python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print({k: d.get(k) for k in sys.argv[2:]})" "$@" 2>&1 | tail -1; }
train() {
  local t=$1 name=$2; shift 2
  timeout "$t" $F train $D --backbone efficientnet-lite0 --device cuda --proposal-cache $C --runs-dir $R --json \
    --name "$name" "$@" > "$R/$name.json" 2> "$R/$name.err"
  echo "$name rc=$? $(summary "$R/$name.json" iterations seconds images_per_s best_map)"
}
mkdir -p $R
if [ "$STAGE" = checks ]; then
{
  for w in 0 4 8; do train 90 w$w --iterations 150 --eval-every 0 --workers $w; done
  train 90 w8-bf16 --iterations 150 --eval-every 0 --workers 8 --amp
} > "$OUT/train.txt" 2>&1
cat "$OUT/train.txt"
log done
exit 0
fi

log "default recipe in float32, bfloat16 and float16, side by side (5 workers each)"
train 240 full-fp32 --workers 5 > "$R/full-fp32.line" &
train 240 full-bf16 --workers 5 --amp > "$R/full-bf16.line" &
train 240 full-fp16 --workers 5 --amp --amp-dtype float16 > "$R/full-fp16.line" &
wait
{
  for name in fp32 bf16 fp16; do
    cat "$R/full-$name.line"; tail -3 "$R/full-$name.err"
    timeout 45 $F evaluate $R/full-$name/best.pt $D -s test --device cuda --proposal-cache $C --out $R/eval-$name \
      --json > "$R/eval-$name.json" 2> "$R/eval-$name.err"
    echo "test $name rc=$? $(summary "$R/eval-$name.json" map_voc07 map_area images)"
  done
} > "$OUT/amp.txt" 2>&1
cat "$OUT/amp.txt"
python3 - "$R" > "$OUT/amp_losses.csv" <<'PY'
import csv, sys
from pathlib import Path
names = ("fp32", "bf16", "fp16")
rows = {}
for name in names:
    path = Path(sys.argv[1]) / f"full-{name}" / "metrics.csv"
    if path.is_file():
        for r in csv.DictReader(path.open()):
            rows.setdefault(int(r["iteration"]), {})[name] = (r["loss"], r["grad_norm"], r.get("map_area") or "")
print("iteration," + ",".join(f"{n}_loss,{n}_grad_norm,{n}_map_area" for n in names))
for it in sorted(rows):
    print(str(it) + "," + ",".join(",".join(rows[it].get(n, ("", "", ""))) for n in names))
PY
log done
