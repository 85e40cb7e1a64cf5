# Two entry points for a fresh Debian machine: `make demo` and `make test`.
# Both create .venv and install the Debian and Python packages they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Build-time needs of systemd-python, the venv module on Debian's python3, and the
# peers the tests start themselves (MQTT broker, pty pairs for serial links, the browser
# that Playwright drives through the dashboard: Debian's, never a downloaded one).
DEBIAN_PACKAGES := python3-venv libsystemd-dev pkg-config gcc python3-dev mosquitto socat chromium

.PHONY: demo test setup debian-packages clean

demo: setup
	$(BIN)/gatewayd demo

test: setup
	$(BIN)/pytest

setup: debian-packages $(STAMP)

debian-packages:
	@tools/ensure-debian-packages $(DEBIAN_PACKAGES)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,linux]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) var build dist *.egg-info
