"""package.xml against rosdep: every key resolves on the supported distros, every import declared.

``rosdep install --from-paths src`` fails as a whole on one key it cannot resolve ("Cannot locate
rosdep definition for [key]"). The rules below are rosdep's: a key is a ROS package released in
the distro (``<distro>/distribution.yaml``) or a system key of ``rosdep/base.yaml`` /
``rosdep/python.yaml`` with a definition for the platform (OS, then codename or ``'*'``, then
packages or an installer such as ``pip``). The files are ros/rosdistro's, copied into
``../shared/rosdep`` (no network here); the tests skip, saying so, where that copy is missing.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ElementTree
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.shared import SHARED

ROOT = Path(__file__).resolve().parent.parent
ROSDEP = SHARED / "rosdep"
SUPPORTED_DISTROS = ("jazzy", "kilted")
DEPEND_TAGS = ("depend", "build_depend", "exec_depend", "test_depend", "buildtool_depend")

#: Top-level modules the package imports -> the rosdep key that provides them.
IMPORT_KEYS = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "builtin_interfaces": "builtin_interfaces",
    "ament_index_python": "ament_index_python",
    "sensor_msgs": "sensor_msgs",
    "stereo_msgs": "stereo_msgs",
    "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "message_filters": "message_filters",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "torch": "python3-torch",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "scipy": "python3-scipy",
    "skimage": "python3-skimage",
    "h5py": "python3-h5py",
    "google": "python3-protobuf",  # google.protobuf, ONNX's serialisation
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
}
#: Keys declared for what the package needs without importing it by name.
INDIRECT_KEYS = {
    "lifecycle_msgs": "rclpy.lifecycle's services and messages",
    "python3-tensorboard-pip": "torch.utils.tensorboard (training logs)",
}
#: Imports with no rosdep key in any distro, or optional: installed as the README says.
NOT_ROSDEP = {
    "safetensors": "no rosdep key: pip (setup.py install_requires, README)",
    "onnx": "no rosdep key: pip (setup.py install_requires, README)",
    "tensorrt": "optional backend, from NVIDIA's JetPack or index",
    "typing_extensions": "type checking only",
}
TEST_IMPORT_KEYS = {"pytest": "python3-pytest", "yaml": "python3-yaml"}


def _depends(tags: tuple[str, ...] = DEPEND_TAGS) -> dict[str, list[str]]:
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    return {tag: [element.text.strip() for element in root.iter(tag)] for tag in tags}


@cache
def _yaml(name: str) -> Any:
    path = ROSDEP / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: ros/rosdistro's rosdep files are needed to check keys")
    return yaml.safe_load(path.read_text())


def _released_packages(distro: str) -> set[str]:
    """The ROS packages ``distro`` releases (a one-package repository releases its own name)."""
    packages: set[str] = set()
    for name, repository in _yaml(f"{distro}-distribution.yaml")["repositories"].items():
        release = repository.get("release") or {}
        if "version" in release:
            packages.update(release.get("packages", [name]))
    return packages


def _platforms(distro: str) -> list[tuple[str, str]]:
    platforms = _yaml(f"{distro}-distribution.yaml")["release_platforms"]
    return [(os_name, str(codename)) for os_name, codenames in platforms.items()
            for codename in codenames]


def _installs(definition: Any, codename: str) -> bool:
    """Whether an OS-level rosdep definition installs something on ``codename``."""
    if definition is None:
        return False
    if isinstance(definition, list | str):
        return bool(definition)
    if "packages" in definition or any(k in definition for k in ("apt", "pip", "source", "dnf")):
        return True
    if codename in definition:
        return _installs(definition[codename], codename)
    return "*" in definition and _installs(definition["*"], codename)


def _resolves(key: str, distro: str, os_name: str, codename: str) -> bool:
    if key in _released_packages(distro):
        return True
    for rules in (_yaml("base.yaml"), _yaml("python.yaml")):
        rule = rules.get(key)
        if rule is None:
            continue
        definition = rule.get(os_name, rule.get("*"))
        return _installs(definition, codename)
    return False


def _imports(paths: list[Path]) -> set[str]:
    """Top-level names of the third-party modules ``paths`` import."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"cnd_depth_ros", "fixtures", "__future__"}


@pytest.mark.parametrize("distro", SUPPORTED_DISTROS)
def test_every_key_resolves_with_rosdep(distro: str) -> None:
    keys = sorted({key for keys in _depends().values() for key in keys})
    for os_name, codename in _platforms(distro):
        if os_name not in ("ubuntu", "debian"):
            continue  # the platforms the wheels and the README cover
        missing = [key for key in keys if not _resolves(key, distro, os_name, codename)]
        assert not missing, (
            f"rosdep on {distro} ({os_name} {codename}) cannot resolve {missing}: "
            "`rosdep install --from-paths src` would fail"
        )


def test_the_resolver_refuses_what_rosdep_refuses() -> None:
    """The keys of the issue that broke ``rosdep install``, and Humble's lack of Kilted-only
    packages, fail here too; a codename set to null (python3-torch on focal) does not install."""
    for key in ("rclpy_lifecycle", "python3-safetensors-pip", "python3-onnx-pip"):
        assert not _resolves(key, "jazzy", "ubuntu", "noble"), key
    assert _resolves("python3-torch", "jazzy", "ubuntu", "noble")
    assert not _resolves("python3-torch", "jazzy", "ubuntu", "focal")
    assert _resolves("python3-rosbags-pip", "kilted", "ubuntu", "noble")


def test_every_import_is_declared() -> None:
    declared = _depends(("depend", "exec_depend"))
    exec_keys = set(declared["depend"] + declared["exec_depend"])
    sources = [*sorted((ROOT / "cnd_depth_ros").rglob("*.py")), *sorted(ROOT.glob("launch/*.py"))]
    imported = _imports(sources)
    unknown = imported - set(IMPORT_KEYS) - set(NOT_ROSDEP)
    assert not unknown, f"imports with no rosdep key recorded in this test: {sorted(unknown)}"
    undeclared = {IMPORT_KEYS[name] for name in imported & set(IMPORT_KEYS)} - exec_keys
    assert not undeclared, f"imported but not an exec_depend of package.xml: {sorted(undeclared)}"
    unused = exec_keys - {IMPORT_KEYS[name] for name in imported if name in IMPORT_KEYS}
    assert unused <= set(INDIRECT_KEYS), f"exec_depend keys nothing needs: {sorted(unused)}"
    assert "rviz2" not in exec_keys, "rviz2 pulls Qt onto headless robots: it stays optional"


def test_test_imports_are_declared() -> None:
    test_keys = set(_depends(("test_depend",))["test_depend"])
    imported = _imports(sorted((ROOT / "test").rglob("*.py")))
    for name, key in TEST_IMPORT_KEYS.items():
        assert name in imported and key in test_keys, (name, key)


def test_pip_only_requirements_are_in_setup_py() -> None:
    setup = (ROOT / "setup.py").read_text()
    for name, reason in NOT_ROSDEP.items():
        if reason.startswith("no rosdep key"):
            assert f'"{name}>=' in setup, f"{name} has no rosdep key, so setup.py must list it"
