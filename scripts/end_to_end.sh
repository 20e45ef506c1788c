#!/usr/bin/env bash
# The main job end to end: install, then train -> export -> infer -> bench on MNIST.
#
# Data: $DIGITKIT_DATA if set (an MNIST IDX directory or mnist.npz), else the user cache,
# else a verified download from the public mirrors. Everything is written under $OUT
# (default ./runs/end_to_end); an existing run is never overwritten: remove it or set OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/end_to_end}
ARCH=${ARCH:-cnn}

if [ -e "$OUT" ]; then
    echo "end_to_end: $OUT already exists; remove it or set OUT=another/dir" >&2
    exit 1
fi
[ -x .venv/bin/digitkit ] || { python3 -m venv .venv && .venv/bin/pip install -q '.[tensorflow]'; }
dk() { echo "+ digitkit $*" >&2; .venv/bin/digitkit "$@"; }

dk data fetch
dk train --arch "$ARCH" --out "$OUT/train"
dk export "$OUT/train/model.h5" --format all --quantize int8 --out "$OUT/export"
dk data export-png "$OUT/mnist-test-png"
dk infer "$OUT/export/model.onnx" "$OUT/mnist-test-png" -o "$OUT/predictions.csv" \
    --confusion-matrix "$OUT/infer_confusion_matrix.png"
dk bench "$OUT/export" --batch-sizes 1,32,512 --duration 2 \
    --json "$OUT/bench.json" --plot "$OUT/bench.png"
echo "end_to_end: done; everything is under $OUT" >&2
