"""The package as colcon builds it in a ROS 2 workspace (README, "In a ROS 2 workspace").

``colcon build --packages-select cnd_depth_ros`` into a scratch workspace, with and without
``--symlink-install``, then the install tree that ``ros2 run``, ``ros2 launch`` and
``ament_index_python`` read: the package marker, ``share/cnd_depth_ros`` (package.xml, launch
and config files), the executables in ``lib/cnd_depth_ros``, every module of the package and its
weights, and ``install/setup.bash``. A module left out of the install fails here: the project's
own editable install would still find it, so the checks compare files, not imports.

colcon comes from ``.venv-colcon`` (``make test`` builds it; kept apart because colcon-core pins
setuptools below 80 and brings pytest plugins), from the running Python, or from ``PATH``
(``ros-dev-tools`` on a ROS machine); the tests skip, saying so, where there is none.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "cnd_depth_ros"
EXECUTABLES = {"cnd-depth", "depth_node"}
BUILD_TIMEOUT_S = 180


def _source_modules() -> set[Path]:
    return {
        path.relative_to(ROOT)
        for path in (ROOT / PACKAGE).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_every_module_is_in_a_package() -> None:
    """setup.py's find_packages() takes only folders with an ``__init__.py``: a module outside
    them is missing from colcon's install (without --symlink-install) and from every wheel."""
    packages = set(find_packages(where=str(ROOT), exclude=["test", "test.*"]))
    folders = {".".join(module.parent.parts) for module in _source_modules()}
    assert folders <= packages, f"folders without __init__.py: {sorted(folders - packages)}"


def _colcon_command() -> list[str]:
    if importlib.util.find_spec("colcon_core") is not None:
        return [sys.executable, "-c", "import sys; from colcon_core.command import main; "
                "sys.argv[0] = 'colcon'; sys.exit(main())"]
    for candidate in (ROOT / ".venv-colcon" / "bin" / "colcon", shutil.which("colcon")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    pytest.skip("colcon is not installed: make test puts it in .venv-colcon "
                "(pip install colcon-common-extensions; on ROS 2: apt install ros-dev-tools)")


@pytest.fixture(scope="module", params=["symlink-install", "install"])
def install(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with the checkout in ``src/`` (as the README clones it), built by colcon;
    returns its ``install/`` folder."""
    colcon = _colcon_command()
    workspace = tmp_path_factory.mktemp(f"colcon-{request.param}")
    (workspace / "src").mkdir()
    (workspace / "src" / PACKAGE).symlink_to(ROOT, target_is_directory=True)
    command = [*colcon, "--log-base", str(workspace / "log"), "build",
               "--packages-select", PACKAGE, "--event-handlers", "desktop_notification-"]
    if request.param == "symlink-install":
        command.append("--symlink-install")
    # Without ROS sourced: colcon chains no underlay, as on a machine without /opt/ros.
    env = {key: value for key, value in os.environ.items()
           if key not in {"AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH", "CMAKE_PREFIX_PATH"}}
    built = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S, check=False)
    assert built.returncode == 0, f"{' '.join(command)}:\n{built.stdout}\n{built.stderr}"
    return workspace / "install"


def test_ament_index_and_share(install: Path) -> None:
    prefix = install / PACKAGE
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker.is_file(), "ros2 pkg / ament_index_python would not find the package"
    share = prefix / "share" / PACKAGE
    assert (share / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()
    for folder, patterns in {"launch": ["*.launch.py"], "config": ["*.yaml", "*.rviz"]}.items():
        source = {path.name for pattern in patterns for path in (ROOT / folder).glob(pattern)}
        installed = {path.name for path in (share / folder).iterdir()}
        assert source and installed == source, f"share/{PACKAGE}/{folder}"


def test_executables_where_ros2_run_looks(install: Path) -> None:
    lib = install / PACKAGE / "lib" / PACKAGE
    assert {path.name for path in lib.iterdir()} == EXECUTABLES
    for name in EXECUTABLES:
        assert os.access(lib / name, os.X_OK), f"lib/{PACKAGE}/{name} is not executable"
    # The script's own shebang is colcon's Python; the test's Python has the dependencies.
    shown = subprocess.run([sys.executable, str(lib / "cnd-depth"), "--help"],
                           env={**os.environ, "PYTHONPATH": _python_path(install)},
                           capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0 and "usage: cnd-depth" in shown.stdout, shown.stderr


def _site_packages(install: Path) -> Path:
    (site,) = (install / PACKAGE / "lib").glob("python3*/site-packages")
    return site


def _python_path(install: Path) -> str:
    """What install/setup.bash puts first (the build folder too, with --symlink-install)."""
    egg_link = next(_site_packages(install).glob("*.egg-link"), None)
    paths = [egg_link.read_text().splitlines()[0]] if egg_link else []
    return os.pathsep.join([*paths, str(_site_packages(install))])


def test_every_module_and_weight_installed(install: Path) -> None:
    site = _site_packages(install)
    egg_link = next(site.glob("*.egg-link"), None)
    if egg_link is not None:  # --symlink-install: the build folder links back to the source
        package = Path(egg_link.read_text().splitlines()[0]) / PACKAGE
        assert package.resolve() == (ROOT / PACKAGE).resolve()
        return
    installed = {path.relative_to(site) for path in (site / PACKAGE).rglob("*.py")}
    missing = _source_modules() - installed
    assert not missing, f"not installed: {sorted(map(str, missing))}"
    weights = {path.name for path in (ROOT / PACKAGE / "weights").iterdir()
               if path.suffix in {".safetensors", ".json"}}
    assert weights <= {path.name for path in (site / PACKAGE / "weights").iterdir()}


def test_setup_bash_without_ros(install: Path) -> None:
    """``source install/setup.bash`` in a bash with nothing of ROS sourced."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    sourced = subprocess.run(
        [bash, "--norc", "--noprofile", "-c",
         f'source "{install}/setup.bash" && echo "$AMENT_PREFIX_PATH" && echo "$PYTHONPATH"'],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert sourced.returncode == 0 and not sourced.stderr, sourced.stderr
    ament_prefix_path, python_path = sourced.stdout.splitlines()
    assert str(install / PACKAGE) in ament_prefix_path.split(os.pathsep)
    assert str(_site_packages(install)) in python_path.split(os.pathsep)


def test_ros2_pkg_finds_the_install(install: Path) -> None:
    """``ros2 pkg prefix`` and ``ros2 pkg executables`` against the colcon install, ahead of
    the venv's own ament prefix (make venv)."""
    ros2 = Path(sys.executable).parent / "ros2"
    if not ros2.is_file() or importlib.util.find_spec("ros2pkg") is None:
        pytest.skip(f"{ros2} or ros2pkg is missing: ros2cli comes from ../shared/wheels "
                    "(make venv)")
    env = {**os.environ, "AMENT_PREFIX_PATH": os.pathsep.join([str(install / PACKAGE),
                                                               sys.prefix])}
    prefix = subprocess.run([str(ros2), "pkg", "prefix", PACKAGE], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert prefix.stdout.strip() == str(install / PACKAGE), prefix.stderr
    executables = subprocess.run([str(ros2), "pkg", "executables", PACKAGE], env=env,
                                 capture_output=True, text=True, timeout=60, check=False)
    assert set(executables.stdout.split()) == {PACKAGE, *EXECUTABLES}, executables.stderr
