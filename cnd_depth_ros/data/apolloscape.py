"""ApolloScape scene parsing (the paper's dataset): colour images with dense depth.

Layout of a road folder (e.g. ``road02_ins``), after the ApolloScape scene-parsing release
(http://apolloscape.auto/scene.html): ``ColorImage/Record*/Camera 5/NAME_Camera_5.jpg`` and
``Depth/Record*/Camera 5/NAME_Camera_5.png`` (uint16, metres * 200, 0 where there is no
ground truth). Intrinsics of cameras 5 and 6 at the full 3384 x 2710 come from the official
toolkit (``ApolloScapeAuto/dataset-api``, ``utils/data.py``) and are scaled to the image size.

Only the mono depth set is read. The ApolloScape stereo set (``stereo_train_*/camera_5``,
``camera_6``, ``disparity``) documents neither the PNG scale of its disparity nor its rectified
baseline (the toolkit's camera 6 extrinsic is 0.62 m away, user reports say 0.36 m), so metric
depth from it cannot be established; it is deliberately not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.data.base import FrameDataset
from cnd_depth_ros.data.frame import Frame
from cnd_depth_ros.data.readers import read_rgb, read_scaled_png
from cnd_depth_ros.errors import DatasetError

__all__ = ["APOLLO_CAMERAS", "APOLLO_DEPTH_SCALE", "ApolloScapeDataset"]

#: Depth PNG value per metre.
APOLLO_DEPTH_SCALE = 200.0

#: Camera 5 and camera 6 at full resolution (fx, fy, cx, cy from the toolkit).
APOLLO_CAMERAS = {
    "Camera_5": PinholeCamera(
        3384, 2710, 2304.54786556982, 2305.875668062, 1686.23787612802, 1354.98486439791
    ),
    "Camera_6": PinholeCamera(
        3384, 2710, 2300.39065314361, 2301.31478860597, 1713.21615190657, 1342.91100799715
    ),
}


@dataclass(frozen=True)
class _Item:
    image: Path
    depth: Path
    camera: str


class ApolloScapeDataset(FrameDataset[_Item]):
    """Mono frames of one ApolloScape scene-parsing road folder (``ColorImage/`` + ``Depth/``).

    Images without a depth file are skipped. ``depth_scale`` is the PNG value per metre.
    """

    def __init__(self, root: str | Path, *, depth_scale: float = APOLLO_DEPTH_SCALE) -> None:
        self.root = Path(root)
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be positive, got {depth_scale}")
        self.depth_scale = depth_scale
        colour_dir, depth_dir = self.root / "ColorImage", self.root / "Depth"
        if not colour_dir.is_dir() or not depth_dir.is_dir():
            raise DatasetError(
                f"{self.root} is not an ApolloScape road folder: needs ColorImage/ and Depth/"
            )
        items = []
        for image in sorted(colour_dir.rglob("*.jpg")):
            depth = (depth_dir / image.relative_to(colour_dir)).with_suffix(".png")
            camera = next((name for name in APOLLO_CAMERAS if image.stem.endswith(name)), None)
            if camera is None:
                raise DatasetError(f"{image}: name does not end in Camera_5 or Camera_6")
            if depth.is_file():
                items.append(_Item(image, depth, camera))
        if not items:
            raise DatasetError(f"no ColorImage/**/*.jpg with a Depth/ twin under {self.root}")
        super().__init__(items)

    def load(self, item: _Item) -> Frame:
        image = read_rgb(item.image)
        height, width = image.shape[:2]
        depth = read_scaled_png(item.depth, self.depth_scale)
        return Frame(
            left=image,
            camera=APOLLO_CAMERAS[item.camera].resized(width, height),
            depth=depth,
            name=f"apolloscape/{item.image.stem}",
        )
