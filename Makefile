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
# Building the Debian package (debian/control's Build-Depends).
DEB_BUILD_PACKAGES := dpkg-dev debhelper dh-virtualenv python3.11 python3.11-dev python3.11-venv libsystemd-dev pkg-config
# Checking it: lintian, and a Debian root booted under systemd-nspawn to install it into.
DEB_TEST_PACKAGES := lintian debootstrap systemd-container

DEB_VERSION = $(shell dpkg-parsechangelog -S Version 2>/dev/null)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB := build/deb/edge-gateway_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_INPUTS = $(shell git ls-files --cached --others --exclude-standard gatewayd cloud_sync tools debian systemd docs examples pyproject.toml README.md LICENSE)

.PHONY: demo test format setup debian-packages deb deb-packages clean

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

# The package for this machine's architecture, in build/deb (docs/install.md). pip fetches
# the wheels at build time only; its cache stays in build/.
deb: deb-packages
	@$(MAKE) --no-print-directory $(DEB)

$(DEB): $(DEB_INPUTS)
	PIP_CACHE_DIR=$(CURDIR)/build/pip-cache tools/build-deb build/deb

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,linux,cloud]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build dist *.egg-info
