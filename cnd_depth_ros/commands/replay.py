"""Replay a rosbag2 (sqlite3 or MCAP, any ROS 2 distro) through depth_node and score its depth.

The bag's camera topics are published through DDS into a depth_node this command starts (or one
already running: --no-start), at the recorded rate, a multiple (--rate), or as fast as the node
keeps up (--max-rate). Outputs are matched by stamp to ground truth (--gt-topic, a depth image, or
--gt-points-topic, a LiDAR cloud projected into the left camera with --lidar-transform or the
bag's /tf_static) and scored. --out DIR gets metrics.json and report.html; --record PATH a bag of
the node's outputs. --pred-topic scores a depth topic already in the bag without a node; --list
shows the bag's topics. Details: docs/replay.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnd_depth_ros.commands.arguments import backend_spec, non_negative_float, positive_float
from cnd_depth_ros.errors import CndDepthError
from cnd_depth_ros.messages.bag import STORAGES
from cnd_depth_ros.messages.topics import DEFAULT_TOPICS

__all__ = ["add_arguments", "run"]

_DEFAULTS = {
    "left": DEFAULT_TOPICS["left_topic"],
    "left_info": DEFAULT_TOPICS["left_info_topic"],
    "right": DEFAULT_TOPICS["right_topic"],
    "right_info": DEFAULT_TOPICS["right_info_topic"],
    "gt": DEFAULT_TOPICS["depth_topic"],
}
#: The node's max_depth in a replay: the largest it takes, so no estimate is masked as too far.
NODE_MAX_DEPTH_M = 10000.0


def _parameter(text: str) -> tuple[str, str]:
    name, separator, value = text.partition(":=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:=VALUE, got {text!r}")
    return name, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (with metadata.yaml)")
    parser.add_argument("--list", action="store_true", help="list the bag's topics and stop")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where metrics.json and "
                        "report.html go (required unless --list)")
    topics = parser.add_argument_group("topics in the bag")
    topics.add_argument("--left-topic", default=_DEFAULTS["left"],
                        help="sensor_msgs/Image, or CompressedImage (JPEG, PNG; the images are "
                             "then played to the node's */image_rect/compressed and the node "
                             "started with image_transport:=compressed)")
    topics.add_argument("--left-info-topic", default=_DEFAULTS["left_info"])
    topics.add_argument("--right-topic", default=_DEFAULTS["right"])
    topics.add_argument("--right-info-topic", default=_DEFAULTS["right_info"])
    topics.add_argument("--mono", action="store_true", help="left camera only; node in mono mode")
    truth = topics.add_mutually_exclusive_group()
    truth.add_argument("--gt-topic", default=_DEFAULTS["gt"], help="ground-truth depth image")
    truth.add_argument("--gt-points-topic", help="ground-truth LiDAR PointCloud2 instead")
    topics.add_argument("--lidar-transform", type=float, nargs=7,
                        metavar=("X", "Y", "Z", "QX", "QY", "QZ", "QW"),
                        help="pose of the LiDAR frame in the left optical frame (default: "
                             "looked up in --tf-topic)")
    topics.add_argument("--tf-topic", default="/tf_static", help="static transforms")
    topics.add_argument("--gt-slop", type=non_negative_float, default=0.0, metavar="S",
                        help="largest stamp difference to ground truth (seconds; LiDAR: ~0.05)")
    topics.add_argument("--pred-topic", help="score this depth topic of the bag; no node runs")
    node = parser.add_argument_group("depth_node")
    node.add_argument("--model", help="model_path for the node (default: the shipped model)")
    node.add_argument("--backend", default="auto", help="node backend")
    node.add_argument("--param", type=_parameter, action="append", default=[],
                      metavar="NAME:=VALUE", help="another node parameter (repeatable)")
    node.add_argument("--no-start", action="store_true",
                      help="use a depth_node already running in --namespace")
    node.add_argument("--namespace", default="", help="the node's namespace")
    pacing = parser.add_argument_group("pacing")
    speed = pacing.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=positive_float, default=1.0,
                       help="multiple of the recorded rate")
    speed.add_argument("--max-rate", action="store_true",
                       help="as fast as the node keeps up: send each frame after the last answer")
    pacing.add_argument("--slop", type=non_negative_float, default=0.0, metavar="S",
                        help="camera stamps this close (seconds) form one frame")
    pacing.add_argument("--frame-timeout", type=positive_float, default=10.0, metavar="S",
                        help="--max-rate: longest wait for one answer")
    pacing.add_argument("--startup-timeout", type=positive_float, default=120.0, metavar="S",
                        help="longest wait for the node to subscribe and answer a first frame")
    score = parser.add_argument_group("scoring and output")
    score.add_argument("--min-depth", type=non_negative_float, default=1e-3,
                       help="ground truth nearer than this (m) is not scored; predictions are "
                            "clipped to the range (the KITTI protocol)")
    score.add_argument("--max-depth", type=positive_float, default=80.0,
                       help="ground truth farther than this (m) is not scored; predictions are "
                            "clipped to it (the node runs with max_depth "
                            f"{NODE_MAX_DEPTH_M:g} unless --param sets it)")
    score.add_argument("--baseline", metavar="BACKEND", type=backend_spec,
                       help="also score this backend with its defaults on the bag's stereo pairs "
                            "against the same depth ground truth, next to the node in the "
                            "report: sgbm (OpenCV StereoSGBM), sgbm:stereo_image_proc (with "
                            "stereo_image_proc's own settings), or a network backend running "
                            "--model")
    score.add_argument("--panels", type=int, default=4, help="frames shown as images in the "
                       "report")
    score.add_argument("--record", type=Path, metavar="PATH",
                       help="record the node's depth, camera_info and points into this bag")
    score.add_argument("--record-storage", choices=STORAGES, default="sqlite3")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _list(args: argparse.Namespace) -> dict[str, Any]:
    from cnd_depth_ros.messages.bag import BagReader

    with BagReader(args.bag) as reader:
        topics = sorted(reader.topics.values(), key=lambda topic: topic.name)
    width = max((len(topic.name) for topic in topics), default=5)
    print(f"{'topic':<{width}}  {'count':>7}  type")
    for topic in topics:
        print(f"{topic.name:<{width}}  {topic.count:>7}  {topic.msgtype}")
    return {"bag": str(args.bag), "topics": [vars(topic) for topic in topics]}


def _truth(args: argparse.Namespace, reader: Any) -> Any:
    from cnd_depth_ros.evaluation.matching import DepthTopicTruth, PointCloudTruth
    from cnd_depth_ros.messages.tf_static import transform_matrix

    if args.gt_points_topic is None:
        return DepthTopicTruth(reader, args.gt_topic, args.gt_slop)
    transform = None
    if args.lidar_transform is not None:
        try:
            transform = transform_matrix(args.lidar_transform[:3], args.lidar_transform[3:])
        except ValueError as error:
            raise CndDepthError(f"--lidar-transform: {error}") from error
    return PointCloudTruth(
        reader, args.gt_points_topic, args.left_info_topic, transform=transform,
        tf_topic=args.tf_topic, slop_s=args.gt_slop,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.list:
        return _list(args)
    if args.out is None:
        raise CndDepthError("--out DIR is required (or --list)")
    if args.panels < 0:
        raise CndDepthError(f"--panels must not be negative, got {args.panels}")
    if args.min_depth >= args.max_depth:
        raise CndDepthError(
            f"--min-depth ({args.min_depth}) must be below --max-depth ({args.max_depth})"
        )
    if args.baseline and (args.mono or args.gt_points_topic):
        raise CndDepthError("--baseline needs stereo topics and a --gt-topic depth image")
    from cnd_depth_ros.evaluation.replay import ReplayTopics, score_depth_topic
    from cnd_depth_ros.evaluation.scoring import ReplayScorer
    from cnd_depth_ros.messages.bag import COMPRESSED_IMAGE, BagReader

    with BagReader(args.bag) as reader:
        left = reader.topics.get(args.left_topic)
        topics = ReplayTopics(
            left=args.left_topic,
            left_info=args.left_info_topic,
            right=None if args.mono else args.right_topic,
            right_info=None if args.mono else args.right_info_topic,
            compressed=left is not None and left.msgtype == COMPRESSED_IMAGE,
        )
        truth = _truth(args, reader)
        expected = reader.topics.get(args.pred_topic or args.left_topic)
        scorer = ReplayScorer(
            truth, expected=expected.count if expected else 0, min_depth=args.min_depth,
            max_depth=args.max_depth, panels=args.panels,
        )
        details: dict[str, Any] = {"bag": str(args.bag), "ground truth": args.gt_points_topic
                                   or args.gt_topic}
        if args.pred_topic is not None:
            result = score_depth_topic(reader, args.pred_topic, topics, scorer,
                                       slop_s=args.gt_slop)
            details["prediction"] = args.pred_topic
        else:
            result = _replay(args, reader, topics, scorer, details)
    baseline = _baseline(args, sorted(scorer.panel_frames)) if args.baseline else None
    if baseline is not None:
        result["baseline"] = {"backend": baseline[0], "overall": baseline[2]}
    paths = scorer.write(args.out, result, title=f"depth on {args.bag.name}", details=details,
                         baseline=baseline)
    _summary(result, paths)
    return {**result, "out": str(args.out), **{k: str(v) for k, v in paths.items()}}


def _baseline(
    args: argparse.Namespace, panels: list[int]
) -> tuple[str, Any, dict[str, float]]:
    """Backend ``--baseline`` on the bag's stereo pairs, scored like the node on the same ground
    truth and depth range; frame i of the bag keeps index i, so the report's panels line up."""
    from cnd_depth_ros.data.rosbag import RosbagDataset
    from cnd_depth_ros.evaluation.dataset_eval import evaluate_dataset, open_predictor
    from cnd_depth_ros.evaluation.report import ReportCollector

    frames = RosbagDataset(
        args.bag, left_topic=args.left_topic, left_info_topic=args.left_info_topic,
        right_topic=args.right_topic, right_info_topic=args.right_info_topic,
        depth_topic=args.gt_topic, slop=args.gt_slop,
    )
    collector = ReportCollector(keep=panels)
    try:
        with open_predictor(args.model, backend=args.baseline) as (predict, _):
            result = evaluate_dataset(
                predict, frames, progress=not args.no_progress, description=args.baseline,
                on_frame=collector.on_frame, min_depth=args.min_depth, max_depth=args.max_depth,
            )
    except ValueError as error:
        raise CndDepthError(f"--baseline {args.baseline}: {error}") from error
    return args.baseline, collector, result["metrics"]


def _replay(
    args: argparse.Namespace, reader: Any, topics: Any, scorer: Any, details: dict[str, Any]
) -> dict[str, Any]:
    from cnd_depth_ros.evaluation.replay import NodeProcess, Pacing, replay_bag
    from cnd_depth_ros.messages.bag import BagRecorder
    from cnd_depth_ros.models.artifact import SHIPPED_MODELS

    pacing = Pacing(
        rate=None if args.max_rate else args.rate,
        slop_s=args.slop,
        frame_timeout_s=args.frame_timeout,
        startup_timeout_s=args.startup_timeout,
    )
    node = None
    if not args.no_start:
        # The node's max_depth would turn a far estimate into no estimate, a failure to the
        # scorer; lifted, the estimate is clipped to the scored range as `eval` clips it.
        parameters = {"mode": "mono" if args.mono else "stereo", "backend": args.backend,
                      "image_transport": "compressed" if topics.compressed else "raw",
                      "max_depth": str(NODE_MAX_DEPTH_M)}
        if args.model:  # a path is made absolute for the node; a shipped name stays a name
            shipped = args.model in SHIPPED_MODELS
            parameters["model_path"] = args.model if shipped else str(Path(args.model).resolve())
        parameters.update(args.param)
        node = NodeProcess(args.namespace, parameters, args.out / "depth_node.log")
        details["node"] = " ".join(f"{k}:={v}" for k, v in parameters.items())
    details["pacing"] = "as fast as the node keeps up" if args.max_rate else f"{args.rate}x"
    recorder = BagRecorder(args.record, args.record_storage) if args.record else None
    result = replay_bag(
        reader, topics, scorer, pacing=pacing, namespace=args.namespace, node=node,
        record=recorder, progress=not args.no_progress,
    )
    if recorder is not None:
        result["record"] = {"path": str(args.record), "messages": recorder.count}
    return result


def _summary(result: dict[str, Any], paths: dict[str, Path]) -> None:
    """One screen: the headline metrics, latency and frame counts, and where the report is."""
    overall, latency, frames = result["overall"], result["latency_ms"], result["frames"]

    def number(value: float | None, unit: str = "") -> str:
        return "n/a" if value is None else f"{value:.3f}{unit}"

    print(
        f"rel {number(overall['rel'])}  log10 {number(overall['log10'])}  "
        f"rmse {number(overall['rmse'], ' m')}  delta1 {number(overall['delta1'])}"
    )
    if latency["p50"] is not None:
        print(f"latency p50 {latency['p50']:.1f} ms  p95 {latency['p95']:.1f} ms")
    print(
        f"frames in {frames['in']}  out {frames['out']}  dropped {frames['dropped']}  "
        f"unmatched {frames['unmatched']}  scored {frames['scored']}"
        + ("  (interrupted)" if result.get("interrupted") else "")
    )
    print(f"report: {paths['report']}\nmetrics: {paths['metrics']}")
