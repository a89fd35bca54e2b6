#!/usr/bin/env bash
# The GPU checks of the inference issue, in one command for a session lent the GPU machine
# (docs/benchmarks.md, "GPU"): the torch backend's CUDA tests, then `cnd-depth bench` of every
# shipped model with torch FP16 + CUDA graphs (and FP32 beside it) at 256x160, and end to end
# from a 1280x720 camera image (resize, network, metric depth, resize back).
#
# Runs from the repository root on a machine whose python3 has torch with CUDA, onnx,
# onnxruntime, opencv-python-headless, safetensors, scikit-image, pyyaml and tqdm (the GPU image
# here has them all; the package is used from the source tree, nothing is installed). Results go
# to $OUT (default gpu_results/), eight files at most:
#
#     bash benchmarks/gpu_checks.sh
set -euo pipefail
out=${OUT:-gpu_results}
python=${PYTHON:-python3}
iters=${ITERS:-300}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' \
    | tee -a "$out/gpu.txt"
# The CUDA tests must run, not skip (-rs names each skip with its reason). A failure is reported
# at the end, after the benchmarks, so one broken check does not cost the whole lease.
tests=passed
"$python" -m pytest -q -rs -p no:cacheprovider test/test_backends.py -k cuda 2>&1 \
    | tee "$out/pytest.log" || tests=failed
if grep -q "needs a CUDA GPU" "$out/pytest.log"; then
    echo "CUDA tests skipped: torch sees no GPU" >&2
    exit 1
fi
for model in cnd_micro cnd_mono cnd_stereo; do
    "$python" -m cnd_depth_ros.cli bench --model "$model" --backends torch:fp16,torch,sgbm \
        --device cuda --iters "$iters" --warmup 30 --json "$out/bench_${model}_256x160.json"
done
"$python" -m cnd_depth_ros.cli bench --model cnd_stereo --backends torch:fp16,sgbm \
    --device cuda --input-width 1280 --input-height 720 --iters "$iters" --warmup 30 \
    --json "$out/bench_cnd_stereo_1280x720.json"
echo "CUDA tests: $tests (see $out/pytest.log)"
[ "$tests" = passed ]
