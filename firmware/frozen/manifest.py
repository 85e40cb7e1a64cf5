# Freezes the node application into a MicroPython firmware image, so that its bytecode runs
# from flash instead of being loaded into the heap (about 12 KB less RAM for an 8-channel
# node: bench/firmware_sample.py, ROMFS layout, which runs the same way). From a MicroPython
# checkout with ESP-IDF set up:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/firmware/frozen/manifest.py
# then flash the image (edge-flash firmware) and deploy with `frozen = true` in the node's
# inventory entry: only main.py and config.json go on the file system.
include("$(PORT_DIR)/boards/manifest.py")

# What edge-flash deploys to an ESP32 as .mpy files (tools/edge_flash/build.py, board "esp32");
# main.py stays on the file system. tests/edge_flash/test_frozen.py keeps the two lists equal.
for name in (
    "app",
    "config",
    "config_model",
    "detectors",
    "flashfs",
    "hal_esp32",
    "modbus_pdu",
    "modbus_rtu",
    "modbus_tcp",
    "node",
    "regmap",
    "safety",
):
    module(name + ".py", base_path="..")
