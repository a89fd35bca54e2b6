"""ament_python build of cnd_depth_ros; also a plain pip package (`pip install -e .[ros,dev]`)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "cnd_depth_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={package_name: ["weights/*.safetensors", "weights/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "opencv-python-headless>=4.8",
        "safetensors>=0.4",
        "pyyaml>=6",
        "tqdm>=4.60",
        "onnx>=1.16",
        "onnxscript>=0.2",
        "onnxruntime>=1.18",
        "rosbags>=0.10",
        "h5py>=3.8",
        "scikit-image>=0.22",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "tensorboard>=2.15",
        "setuptools",
    ],
    extras_require={
        # ROS 2 Kilted from PyPI. The ros-jazzy-* wheels work the same (make jazzy-test).
        "ros": [
            "ros-rclpy",
            "ros-rcl-interfaces",
            "ros-builtin-interfaces",
            "ros-ament-index-python",
            "ros-sensor-msgs",
            "ros-stereo-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
            "ros-lifecycle-msgs",
            "ros-rmw-fastrtps-cpp",
            # What ROS 2's launch needs besides ROS packages (../shared/wheels: launch, ros2cli).
            "osrf-pycommon",
            "packaging",
        ],
        "dev": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "ruff>=0.5", "mypy>=1.8"],
    },
    zip_safe=True,
    maintainer="cnd_depth_ros developers",
    maintainer_email="cnd-depth-ros@example.com",
    description="Metric depth and point clouds from stereo or mono cameras with the CND networks.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "cnd-depth = cnd_depth_ros.cli:main",
            "depth_node = cnd_depth_ros.ros.start:main",
        ],
    },
)
