"""What ``image_transport:=compressed`` costs depth_node per camera image: decoding a
CompressedImage (``compressed_to_rgb``) of the Middlebury motorcycle resized to 640x480, JPEG
(OpenCV's default quality 95) and PNG, on one OpenCV thread as in the node's worker.

    .venv/bin/python benchmarks/compressed_decode.py --json decode.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
from report import emit, machine

from cnd_depth_ros.data.registry import open_dataset
from cnd_depth_ros.messages.image import compressed_to_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    left = open_dataset("motorcycle")[0].left
    bgr = cv2.cvtColor(cv2.resize(left, (args.width, args.height), interpolation=cv2.INTER_AREA),
                       cv2.COLOR_RGB2BGR)
    result: dict[str, object] = {"size": f"{args.width}x{args.height}", "machine": machine()}
    for name, extension in (("jpeg", ".jpg"), ("png", ".png")):
        data = cv2.imencode(extension, bgr)[1].tobytes()
        msg = SimpleNamespace(format=f"rgb8; {name} compressed bgr8", data=data)
        for _ in range(5):
            compressed_to_rgb(msg)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            compressed_to_rgb(msg)
            times.append(time.perf_counter() - start)
        result[name] = {"bytes": len(data), "p50_ms": round(1e3 * float(np.median(times)), 3),
                        "p95_ms": round(1e3 * float(np.percentile(times, 95)), 3)}
    emit(result, args.json)


if __name__ == "__main__":
    main()
