# The two commands of the README. Both build .venv/ from nothing: torch==2.13.0 first (the CPU
# build; a plain `torch` requirement would pull several GB of CUDA packages), then the package with
# its ROS (PyPI `ros-*` wheels) and dev extras; then, where ../shared/wheels exists, ROS 2's
# pure-Python packages that are not on PyPI (launch, launch_ros, ros2cli, message_filters, ...),
# and an ament prefix in the venv so that `ros2 launch cnd_depth_ros ...` finds this package.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= ../shared
WHEELS := $(wildcard $(SHARED)/wheels/*.whl)
WHEELS_STAMP := $(VENV)/.shared-wheels
AMENT_STAMP := $(VENV)/.ament-prefix
# colcon, for test/test_colcon.py (the README's `colcon build`, checked in a scratch workspace), in
# a venv of its own that `make test` builds: colcon-core pins setuptools below 80 and brings
# pytest plugins (pytest-cov, -repeat, -rerunfailures), which stay out of .venv this way.
# 10 s measured, cold pip cache.
COLCON_VENV := .venv-colcon
COLCON_STAMP := $(COLCON_VENV)/.installed
COLCON := colcon-common-extensions==0.3.0 colcon-core==0.21.3
SHARE := $(VENV)/share/cnd_depth_ros
# Python runs this line of a .pth file at every start of the venv's interpreter (ros2, the nodes
# that launch starts, pytest): the venv becomes an ament prefix without `source`-ing anything.
AMENT_PTH := import os, sys; p = [d for d in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if d]; sys.prefix in p or os.environ.__setitem__('AMENT_PREFIX_PATH', os.pathsep.join([sys.prefix, *p]))

.PHONY: demo test lint venv clean jazzy-test ament-prefix

venv: $(STAMP) $(WHEELS_STAMP) $(AMENT_STAMP)

$(STAMP): setup.py setup.cfg pyproject.toml package.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[ros,dev]'
	# Type stubs of the TensorRT 10 API, for the API-conformance test; --no-deps because the real
	# TensorRT wheels are not obtainable here.
	$(BIN)/python -m pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

$(COLCON_STAMP):
	$(PYTHON) -m venv $(COLCON_VENV)
	$(COLCON_VENV)/bin/python -m pip install --quiet $(COLCON)
	touch $(COLCON_STAMP)

# --no-deps: their metadata names ROS packages by their ROS names, which PyPI does not have
# ($(SHARED)/wheels/README.md); what they need comes with the ros extra.
$(WHEELS_STAMP): $(STAMP) $(WHEELS)
ifneq ($(WHEELS),)
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(WHEELS)
else
	@echo "no $(SHARED)/wheels: launch, ros2 launch and message_filters are not installed;" \
	      "the tests that need them skip and say so"
endif
	touch $(WHEELS_STAMP)

# The layout colcon installs, as links into this checkout: the package marker, share/ with
# package.xml, launch/ and config/ (file links: ros2 launch's os.walk skips linked folders), and
# lib/cnd_depth_ros/ with the executables, where launch_ros's Node(package=...) looks.
$(AMENT_STAMP): $(STAMP) $(wildcard launch/*.launch.py config/*)
	$(MAKE) --no-print-directory ament-prefix VENV=$(VENV)
	touch $(AMENT_STAMP)

ament-prefix:
	rm -rf $(SHARE) $(VENV)/lib/cnd_depth_ros
	mkdir -p $(VENV)/share/ament_index/resource_index/packages $(SHARE)/launch $(SHARE)/config \
	         $(VENV)/lib/cnd_depth_ros
	cp resource/cnd_depth_ros $(VENV)/share/ament_index/resource_index/packages/cnd_depth_ros
	ln -s $(CURDIR)/package.xml $(SHARE)/package.xml
	ln -s $(addprefix $(CURDIR)/,$(wildcard launch/*.launch.py)) $(SHARE)/launch/
	ln -s $(addprefix $(CURDIR)/,$(wildcard config/*)) $(SHARE)/config/
	ln -s ../../bin/depth_node ../../bin/cnd-depth $(VENV)/lib/cnd_depth_ros/
	echo "$(AMENT_PTH)" > $$($(VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/cnd_depth_ros_ament_prefix.pth

# The same ROS-facing tests against ROS 2 Jazzy (LTS): a second venv with the ros-jazzy-* wheels
# instead of the Kilted ones, and ../shared/wheels, which run on both. The tests: the node
# through DDS, launch, synchronisers, diagnostics, topics, codecs, QoS, package.xml.
JAZZY := .venv-jazzy
JAZZY_STAMP := $(JAZZY)/.installed
JAZZY_ROS := ros-jazzy-rclpy ros-jazzy-rcl-interfaces ros-jazzy-builtin-interfaces \
             ros-jazzy-ament-index-python ros-jazzy-sensor-msgs ros-jazzy-stereo-msgs \
             ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs ros-jazzy-lifecycle-msgs \
             ros-jazzy-rmw-fastrtps-cpp osrf-pycommon packaging
ROS_TESTS := test/test_package_xml.py test/test_topics.py test/test_image_codec.py \
             test/test_qos.py test/test_synchronizer.py test/test_diagnostics.py \
             test/test_launch.py test/test_depth_node.py test/test_robot_day.py \
             test/test_distro.py

$(JAZZY_STAMP): setup.py setup.cfg pyproject.toml package.xml $(WHEELS)
	$(PYTHON) -m venv $(JAZZY)
	$(JAZZY)/bin/python -m pip install --quiet --upgrade pip
	$(JAZZY)/bin/python -m pip install --quiet torch==2.13.0
	$(JAZZY)/bin/python -m pip install --quiet -e '.[dev]' $(JAZZY_ROS)
ifneq ($(WHEELS),)
	$(JAZZY)/bin/python -m pip install --quiet --no-deps $(WHEELS)
endif
	$(MAKE) --no-print-directory ament-prefix VENV=$(JAZZY)
	touch $(JAZZY_STAMP)

jazzy-test: $(JAZZY_STAMP)
	FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(JAZZY)/bin/python -m pytest -q $(ROS_TESTS)

demo: venv
	FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(BIN)/cnd-depth demo

lint: venv
	$(BIN)/ruff check cnd_depth_ros test benchmarks launch

test: lint $(COLCON_STAMP)
	FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(JAZZY) $(COLCON_VENV) build *.egg-info
