# Entry points for a fresh Debian machine: `make demo`, `make test` and `make deb`.
# Each installs the Debian and Python packages it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Build-time needs of systemd-python, the venv module on Debian's python3, and the
# peers the tests start themselves (MQTT broker, pty pairs for serial links, the browser
# that Playwright drives through the dashboard: Debian's, never a downloaded one) and the
# faults they inject (a stepped clock: libfaketime; write errors: libfiu; ext4 images), and
# promtool (Debian's prometheus) that checks the metrics the daemon serves; the cloud tier's
# tests start their own PostgreSQL and Redis (never the machine's on 5432 and 6379).
DEBIAN_PACKAGES := python3-venv libsystemd-dev pkg-config gcc python3-dev mosquitto socat chromium faketime fiu-utils e2fsprogs prometheus postgresql redis-server
# Building the Debian package here (debian/control's Build-Depends), and for another release or
# architecture in a root of its own (mmdebstrap; arm64 under qemu-user-static).
DEB_BUILD_PACKAGES := dpkg-dev debhelper dh-virtualenv python3 python3-dev python3-venv libsystemd-dev pkg-config \
	mmdebstrap arch-test qemu-user-static binfmt-support systemd-container
# Checking it: lintian, and Debian roots booted under systemd-nspawn to install it into.
DEB_TEST_PACKAGES := lintian

# `make deb RELEASE=trixie ARCH=arm64`: the package for a Raspberry Pi on Raspberry Pi OS (Debian 13).
RELEASE ?= $(shell . /etc/os-release && echo $$VERSION_CODENAME)
ARCH ?= $(shell dpkg --print-architecture)
DEB_VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB := build/deb/$(RELEASE)/edge-gateway_$(DEB_VERSION)_$(ARCH).deb
DEB_INPUTS = $(shell git ls-files --cached --others --exclude-standard gatewayd cloud_sync tools debian systemd docs examples pyproject.toml README.md LICENSE)

.PHONY: demo test format setup debian-packages deb debs deb-packages lock clean

demo: setup
	$(BIN)/gatewayd demo

# The HIL suite runs against the virtual board here (a real node: hil_tests/README.md).
# The format check comes first: it takes a second (`make format` fixes what it finds).
test: setup deb-packages
	$(BIN)/ruff format --check --quiet .
	$(BIN)/pytest
	$(BIN)/pytest hil_tests --junitxml=test-artifacts/hil-junit.xml

format: setup
	$(BIN)/ruff format .

setup: debian-packages $(STAMP)

debian-packages:
	@tools/ensure-debian-packages $(DEBIAN_PACKAGES)

deb-packages:
	@tools/ensure-debian-packages $(DEB_BUILD_PACKAGES) $(DEB_TEST_PACKAGES)

# The package for RELEASE and ARCH (this machine's by default), in build/deb/RELEASE
# (docs/install.md). pip fetches the wheels at build time only; its cache stays in build/.
deb: deb-packages
	@$(MAKE) --no-print-directory $(DEB)

# All four a gateway may run: Debian 12 and 13, amd64 and arm64.
debs: deb-packages
	@for release in bookworm trixie; do for arch in amd64 arm64; do \
		$(MAKE) --no-print-directory deb RELEASE=$$release ARCH=$$arch || exit 1; done; done

$(DEB): $(DEB_INPUTS)
	PIP_CACHE_DIR=$(CURDIR)/build/pip-cache tools/build-deb --release $(RELEASE) --arch $(ARCH) build/deb

# The versions the package ships, with their hashes, for every Python and architecture it is
# built for (debian/requirements.lock); after a change of pyproject.toml's dependencies.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra linux --universal --python-version 3.11 --generate-hashes \
		-c debian/lock-constraints.txt --custom-compile-command "make lock" --quiet -o debian/requirements.lock

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,linux,cloud]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build dist *.egg-info
