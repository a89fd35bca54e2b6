#!/usr/bin/env bash
# The GPU checks, in one command for a machine with an NVIDIA GPU (docs/benchmarks.md, "GPU";
# docs/inference.md, "TensorRT"): the torch backend's CUDA tests, `cnd-depth bench` of every
# shipped model with torch FP16 + CUDA graphs (and FP32 beside it) at 256x160 and end to end from
# a 1280x720 camera image; where TensorRT imports, an FP16 engine built with `build-engine`, its
# benchmark and the TensorRT contract tests.
#
# Every step runs, whatever the one before did: a failure is recorded and the next step starts,
# so one broken check does not cost the rest. A step that cannot run here (no GPU, no TensorRT)
# is recorded as skipped, with the reason. The summary ($OUT/summary.txt) lists each step as
# passed, FAILED or skipped; the exit status is 1 when a step failed, 2 when a package the
# checks need is missing, else 0.
#
# Runs from the repository root with a python3 that has torch (with CUDA for the GPU steps),
# onnx, onnxscript, onnxruntime, opencv-python-headless, safetensors, scikit-image, pyyaml and
# tqdm; the package is used from the source tree, nothing is installed. On a machine without a
# GPU it checks those packages and reports every GPU step as skipped (seconds). Settings:
#
#     OUT=gpu_results PYTHON=python3 ITERS=300 WARMUP=30 MODELS="cnd_micro cnd_mono cnd_stereo" \
#         bash benchmarks/gpu_checks.sh
set -uo pipefail
out=${OUT:-gpu_results}
python=${PYTHON:-python3}
iters=${ITERS:-300}
warmup=${WARMUP:-30}
models=${MODELS:-cnd_micro cnd_mono cnd_stereo}
mkdir -p "$out"
: > "$out/summary.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
failed=0

note() {  # note STATUS STEP [DETAIL]: one line of the summary
    printf '%-8s %s%s\n' "$1" "$2" "${3:+ ($3)}" | tee -a "$out/summary.txt"
}

step() {  # step NAME LOG COMMAND...: run it, log it, record the outcome, never stop here
    local name=$1 log=$2
    shift 2
    echo "== $name"
    if "$@" > "$out/$log" 2>&1; then
        note passed "$name" "$log"
    else
        note FAILED "$name" "$log"
        failed=1
    fi
    tail -n 5 "$out/$log"
}

# Preflight: the packages every step needs, with their versions (onnxscript is the exporter's
# optimiser, onnxruntime the INT8 quantiser and the CPU backend).
if ! "$python" - > "$out/versions.txt" 2>&1 <<'EOF'
import importlib.metadata, sys
missing = []
for name in ("torch", "onnx", "onnxscript", "onnxruntime", "opencv-python-headless",
             "safetensors", "scikit-image", "pyyaml", "tqdm"):
    try:
        print(name, importlib.metadata.version(name))
    except importlib.metadata.PackageNotFoundError:
        if name != "opencv-python-headless":
            missing.append(name)
try:
    import cv2
    print("opencv", cv2.__version__)
except ImportError:
    missing.append("opencv-python(-headless)")
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
sys.exit(f"missing: {', '.join(missing)}" if missing else 0)
EOF
then
    cat "$out/versions.txt"
    note FAILED preflight "$(tail -n 1 "$out/versions.txt")"
    exit 2
fi
cat "$out/versions.txt"
note passed preflight versions.txt

if command -v nvidia-smi > /dev/null; then
    step "GPU identity" gpu.txt nvidia-smi \
        --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv
else
    note skipped "GPU identity" "no nvidia-smi"
fi

cuda=no
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' && cuda=yes
tensorrt=no
if "$python" -c 'import sys, tensorrt; sys.exit(0 if hasattr(tensorrt, "Builder") else 1)' \
        2> /dev/null; then
    tensorrt=yes
    "$python" -c 'import tensorrt; print("tensorrt", tensorrt.__version__)' \
        | tee -a "$out/versions.txt"
else
    echo "tensorrt absent" >> "$out/versions.txt"
fi

if [ "$cuda" = yes ]; then
    # -rs names every skip: the CUDA tests must run, not skip.
    step "CUDA backend tests" pytest_cuda.log \
        "$python" -m pytest -q -rs -p no:cacheprovider test/test_backends.py -k cuda
    for model in $models; do
        step "bench $model 256x160" "bench_${model}_256x160.log" \
            "$python" -m cnd_depth_ros.cli bench --model "$model" \
            --backends torch:fp16,torch,sgbm --device cuda --input-size 256x160 \
            --iters "$iters" --warmup "$warmup" --json "$out/bench_${model}_256x160.json"
    done
    step "bench cnd_stereo from 1280x720" bench_cnd_stereo_1280x720.log \
        "$python" -m cnd_depth_ros.cli bench --model cnd_stereo --backends torch:fp16,sgbm \
        --device cuda --camera 1280x720 --input-size 256x160 --iters "$iters" \
        --warmup "$warmup" --json "$out/bench_cnd_stereo_1280x720.json"
else
    for name in "CUDA backend tests" "torch CUDA benchmarks"; do
        note skipped "$name" "torch sees no CUDA GPU"
    done
fi

if [ "$tensorrt" = yes ] && [ "$cuda" = yes ]; then
    step "TensorRT FP16 engine build" build_engine.log \
        "$python" -m cnd_depth_ros.cli build-engine --model cnd_stereo --precision fp16 \
        --json "$out/build_engine_cnd_stereo_fp16.json"
    step "bench TensorRT FP16" bench_tensorrt.log \
        "$python" -m cnd_depth_ros.cli bench --model cnd_stereo \
        --backends tensorrt:fp16,torch:fp16 --device cuda --iters "$iters" \
        --warmup "$warmup" --json "$out/bench_cnd_stereo_tensorrt.json"
    step "TensorRT contract tests" pytest_tensorrt.log \
        "$python" -m pytest -q -rs -p no:cacheprovider test/test_backends.py -k tensorrt
elif [ "$tensorrt" = yes ]; then
    note skipped "TensorRT engine, bench and contract tests" "TensorRT imports, no CUDA GPU"
else
    note skipped "TensorRT engine, bench and contract tests" \
        "TensorRT absent: its Python package does not import (or is only the type stubs)"
fi

echo "== summary ($out/summary.txt)"
cat "$out/summary.txt"
exit "$failed"
