"""The TensorRT engine cache: keys, sidecars, verified loads, stale and corrupt engines, engines
TensorRT refuses, and builds racing for one engine.

Nothing here needs TensorRT: engines are opaque bytes to the cache, so the tests store real files
with made-up contents and a build callable that counts its calls; the race runs two real
processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.errors import ArtifactError, BackendError
from cnd_depth_ros.inference.engine_cache import (
    CACHE_ENV,
    BuildTarget,
    CachedEngine,
    EngineCache,
    EngineKey,
    StaleEngineError,
    copy_engine_file,
    default_cache_dir,
    load_engine_file,
    save_engine_file,
)
from cnd_depth_ros.models.artifact import ModelMetadata

ORIN = BuildTarget("10.3.0", "Orin", "8.7", 16, 61)  # Jetson AGX Orin 64GB
ORIN_NANO = BuildTarget("10.3.0", "Orin", "8.7", 8, 7)  # same name, same compute capability
H100 = BuildTarget("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0", 132, 79)
MODEL = hashlib.sha256(b"weights").hexdigest()
RECIPE = hashlib.sha256(b"export recipe").hexdigest()
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def metadata() -> ModelMetadata:
    camera = PinholeCamera(64, 32, fx=50.0, fy=50.0, cx=31.5, cy=15.5, baseline=0.12)
    return ModelMetadata(
        variant="cnd_stereo", input_height=32, input_width=64, output="disparity",
        training_camera=camera, stereo=True,
    )


@pytest.fixture
def key() -> EngineKey:
    return EngineKey(MODEL, "fp16", 32, 64, H100, RECIPE)


def _fields(cached: CachedEngine) -> tuple[Path, bytes, object, object]:
    return cached.path, cached.data, cached.record, cached.loaded


class Builds:
    """A build callable that records how often it ran."""

    def __init__(self, engine: bytes = b"serialized engine \x00\x01\x02") -> None:
        self.engine = engine
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.engine


def test_key_digest_depends_on_every_field(key: EngineKey) -> None:
    variants = [
        replace(key, model_sha256=hashlib.sha256(b"other").hexdigest()),
        replace(key, precision="int8"),
        replace(key, height=48),
        replace(key, width=80),
        replace(key, target=replace(H100, tensorrt_version="11.0.0")),
        replace(key, target=replace(H100, gpu_name="NVIDIA H200")),
        replace(key, target=replace(H100, compute_capability="8.9")),
        replace(key, target=replace(H100, multiprocessors=114)),
        replace(key, target=replace(H100, memory_gib=94)),
        replace(key, recipe=hashlib.sha256(b"another exporter").hexdigest()),
        replace(key, calibration=hashlib.sha256(b"kitti").hexdigest()),
    ]
    digests = {key.digest, *(variant.digest for variant in variants)}
    assert len(digests) == len(variants) + 1
    assert EngineKey.from_json(json.loads(json.dumps(key.to_json()))).digest == key.digest


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("precision", "bf16", "precision"), ("height", 0, "positive"), ("model_sha256", "abc", "hex"),
     ("recipe", "", "recipe must be 64 hex"), ("calibration", "kitti", "calibration must be")],
)
def test_key_rejects_bad_values(key: EngineKey, field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(key, **{field: value})


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "engines"))
    assert default_cache_dir() == tmp_path / "engines"
    assert EngineCache().root == tmp_path / "engines"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "cnd_depth_ros" / "engines"


def test_save_then_load_round_trip(tmp_path: Path, key: EngineKey, metadata: ModelMetadata) -> None:
    path = tmp_path / "model.engine"
    record = save_engine_file(path, b"engine", key=key, metadata=metadata, build_seconds=61.25,
                              source="cnd_stereo")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(b"engine").hexdigest()
    assert sidecar["key"]["target"]["gpu_name"] == H100.gpu_name
    assert sidecar["metadata"]["variant"] == "cnd_stereo"
    assert sidecar["build_seconds"] == 61.25
    engine, loaded = load_engine_file(path, target=H100, key=key)
    assert engine == b"engine"
    assert loaded == record
    # By path alone (no key): the sidecar says which model it is.
    assert load_engine_file(path, target=H100)[1].metadata == metadata


def _stored(tmp_path: Path, key: EngineKey, metadata: ModelMetadata) -> Path:
    path = tmp_path / "model.engine"
    save_engine_file(path, b"0123456789" * 10, key=key, metadata=metadata, build_seconds=1.0,
                     source="test")
    return path


def test_truncated_engine_is_refused(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    path = _stored(tmp_path, key, metadata)
    path.write_bytes(path.read_bytes()[:37])
    with pytest.raises(ArtifactError, match=r"model\.engine: truncated.*37 bytes, 100"):
        load_engine_file(path, target=H100, key=key)


def test_altered_engine_fails_its_checksum(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    path = _stored(tmp_path, key, metadata)
    data = bytearray(path.read_bytes())
    data[50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.engine: engine checksum"):
        load_engine_file(path, target=H100, key=key)


def test_engine_without_or_with_broken_sidecar(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    path = _stored(tmp_path, key, metadata)
    sidecar = path.with_suffix(".json")
    sidecar.write_text("{not json")
    with pytest.raises(ArtifactError, match=r"model\.json: unreadable engine sidecar"):
        load_engine_file(path, target=H100)
    sidecar.write_text(json.dumps({"format": 2, "key": {}}))
    with pytest.raises(ArtifactError, match=r"model\.json: invalid engine sidecar"):
        load_engine_file(path, target=H100)
    sidecar.write_text(json.dumps({"format": 1, "key": {}}))  # before recipe and calibration
    with pytest.raises(ArtifactError, match=r"model\.json: engine sidecar format 1 is not supp"):
        load_engine_file(path, target=H100)
    sidecar.write_text("[]")
    with pytest.raises(ArtifactError, match=r"model\.json: expected a JSON object, got list"):
        load_engine_file(path, target=H100)
    sidecar.unlink()
    with pytest.raises(ArtifactError, match=r"model\.engine: no sidecar model\.json"):
        load_engine_file(path, target=H100)


def test_engine_from_another_tensorrt_or_gpu_is_stale(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    path = _stored(tmp_path, replace(key, target=ORIN), metadata)
    stale = r"model\.engine: stale engine: built by TensorRT 10\.3\.0 on Orin .*this is TensorRT"
    with pytest.raises(StaleEngineError, match=stale + r" 10\.13\.0\.35 on NVIDIA H100"):
        load_engine_file(path, target=H100)
    with pytest.raises(StaleEngineError, match=r"16 SMs, 61 GiB\), this is .*8 SMs, 7 GiB"):
        load_engine_file(path, target=ORIN_NANO)
    newer = replace(H100, tensorrt_version="11.0.0")
    path = _stored(tmp_path, key, metadata)
    with pytest.raises(StaleEngineError, match=r"TensorRT 11\.0\.0"):
        load_engine_file(path, target=newer)
    with pytest.raises(StaleEngineError, match="precision fp16, wanted int8"):
        load_engine_file(path, target=H100, key=replace(key, precision="int8"))


def test_load_or_build_builds_once_then_hits(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    cache, build = EngineCache(tmp_path), Builds()
    path, engine, record, _ = _fields(cache.load_or_build(key, build, metadata=metadata,
                                                         source="m"))
    assert (build.calls, engine) == (1, build.engine)
    assert path == cache.engine_path(key, "cnd_stereo")
    assert path.name.startswith("cnd_stereo-fp16-64x32-") and path.suffix == ".engine"
    assert record.build_seconds >= 0.0
    again = cache.load_or_build(key, build, metadata=metadata, source="m")
    assert build.calls == 1
    assert again.path == path and again.data == engine and again.loaded == engine
    cache.load_or_build(key, build, metadata=metadata, source="m", rebuild=True)
    assert build.calls == 2


def test_corrupt_cached_engine_is_logged_and_rebuilt(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata, caplog: pytest.LogCaptureFixture
) -> None:
    cache, build = EngineCache(tmp_path), Builds()
    path = cache.load_or_build(key, build, metadata=metadata, source="m").path
    path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        engine = cache.load_or_build(key, build, metadata=metadata, source="m").data
    assert build.calls == 2 and engine == build.engine
    assert f"{path}: truncated" in caplog.text and "rebuilding" in caplog.text
    assert load_engine_file(path, target=H100, key=key)[0] == build.engine


def test_stale_engine_is_logged_rebuilt_and_replaced(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    old_key = replace(key, target=ORIN)
    old_path = cache.load_or_build(old_key, Builds(b"orin"), metadata=metadata, source="m").path
    other_model = replace(key, model_sha256=hashlib.sha256(b"other").hexdigest(), target=ORIN)
    kept = cache.load_or_build(other_model, Builds(), metadata=metadata, source="m").path
    assert [path for path, _ in cache.stale_entries(key)] == [old_path]
    build = Builds(b"h100")
    with caplog.at_level(logging.INFO):
        path, engine, _, _ = _fields(cache.load_or_build(key, build, metadata=metadata,
                                                         source="m"))
    assert (build.calls, engine) == (1, b"h100")
    assert f"{old_path} is stale (built by TensorRT 10.3.0 on Orin" in caplog.text
    assert "a first build can take minutes" in caplog.text
    assert not old_path.exists() and not old_path.with_suffix(".json").exists()
    assert kept.exists() and path.exists()


def test_timing_caches_are_per_runtime(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.timing_cache_path(H100) != cache.timing_cache_path(ORIN)
    assert cache.timing_cache_path(ORIN_NANO) != cache.timing_cache_path(ORIN)
    assert cache.timing_cache_path(H100).parent == tmp_path


def test_an_engine_of_an_older_export_recipe_is_rebuilt_and_replaced(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    old = cache.load_or_build(key, Builds(b"old"), metadata=metadata, source="m").path
    new_key = replace(key, recipe=hashlib.sha256(b"layer rewrites changed").hexdigest())
    build = Builds(b"new")
    with caplog.at_level(logging.WARNING):
        cached = cache.load_or_build(new_key, build, metadata=metadata, source="m")
    assert build.calls == 1 and cached.data == b"new" and not old.exists()
    assert "built by export recipe" in caplog.text


def test_int8_engines_of_other_calibration_data_are_kept_and_the_newest_found(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    cache = EngineCache(tmp_path)
    int8 = replace(key, precision="int8")
    kitti = replace(int8, calibration=hashlib.sha256(b"kitti").hexdigest())
    robot = replace(int8, calibration=hashlib.sha256(b"robot bag").hexdigest())
    assert cache.newest_calibrated(int8) is None
    first = cache.load_or_build(kitti, Builds(b"kitti"), metadata=metadata, source="m")
    sidecar = first.path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["built_at"] = "2020-01-01T00:00:00+00:00"  # built long before the next one
    sidecar.write_text(json.dumps(data))
    second = cache.load_or_build(robot, Builds(b"robot"), metadata=metadata, source="m")
    assert first.path.exists() and second.path.exists()
    assert cache.newest_calibrated(int8) == robot
    assert cache.newest_calibrated(replace(int8, height=48)) is None


def test_an_engine_tensorrt_refuses_is_rebuilt_from_the_cache_only(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata, caplog: pytest.LogCaptureFixture
) -> None:
    """The sidecar is intact and current, but the TensorRT here (another build of it, same
    version string) cannot deserialize the plan: rebuild it, as Isaac ROS regenerates from the
    ONNX. A fresh build refused as well is an error, not a loop."""
    cache = EngineCache(tmp_path)
    cache.load_or_build(key, Builds(b"plan of build A"), metadata=metadata, source="m")

    def build_b_runtime(data: bytes) -> str | None:
        return "engine" if data == b"plan of build B" else None

    build = Builds(b"plan of build B")
    with caplog.at_level(logging.WARNING):
        cached = cache.load_or_build(key, build, metadata=metadata, source="m",
                                     accept=build_b_runtime)
    assert build.calls == 1 and cached.loaded == "engine" and cached.data == b"plan of build B"
    assert "TensorRT cannot deserialize the cached engine" in caplog.text
    with pytest.raises(BackendError, match="cannot deserialize the engine it has just built"):
        cache.load_or_build(key, Builds(b"bad"), metadata=metadata, source="m", rebuild=True,
                            accept=lambda data: None)


_RACER = """
import json, logging, sys, time
from pathlib import Path
from cnd_depth_ros.inference.engine_cache import EngineCache, EngineKey
from cnd_depth_ros.models.artifact import ModelMetadata

logging.basicConfig(level=logging.INFO)
root, name, key, metadata = Path(sys.argv[1]), sys.argv[2], *map(json.loads, sys.argv[3:5])
(root / f"started-{name}").touch()

def build():
    (root / f"building-{name}").touch()
    with (root / "builds.log").open("a") as log:
        log.write(name + "\\n")
    deadline = time.monotonic() + 60  # a minutes-long build: still running when the other starts
    while not (root / "started-node").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    return f"engine built by {name}".encode()

cached = EngineCache(root / "cache").load_or_build(
    EngineKey.from_json(key), build, metadata=ModelMetadata.from_json(metadata, source="m"),
    source="m")
print(cached.data.decode())
"""


def test_two_processes_building_one_engine_build_it_once(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    """`cnd-depth build-engine` and a starting node race for the same engine: the second waits
    for the first's build and loads it (no second build, no engine and sidecar of two builds)."""
    arguments = [json.dumps(key.to_json()), json.dumps(metadata.to_json())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _RACER, str(tmp_path), name, *arguments],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )

    first = start("build-engine")
    deadline = time.monotonic() + 60
    while not (tmp_path / "building-build-engine").exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first build never started"
        time.sleep(0.05)
    second = start("node")  # arrives while the first one builds
    outputs = [process.communicate(timeout=60) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert (tmp_path / "builds.log").read_text() == "build-engine\n"
    assert [out.strip() for out, _ in outputs] == ["engine built by build-engine"] * 2
    assert "being built by another process" in outputs[1][1]
    path = EngineCache(tmp_path / "cache").engine_path(key, metadata.variant)
    assert load_engine_file(path, target=H100, key=key)[0] == b"engine built by build-engine"


def test_copy_engine_keeps_it_loadable(
    tmp_path: Path, key: EngineKey, metadata: ModelMetadata
) -> None:
    path = _stored(tmp_path, key, metadata)
    copy = copy_engine_file(path, tmp_path / "out" / "robot.engine")
    assert load_engine_file(copy, target=H100, key=key)[0] == path.read_bytes()
    with pytest.raises(ValueError, match=r"\.engine"):
        copy_engine_file(path, tmp_path / "robot.plan")
