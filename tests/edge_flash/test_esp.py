"""edge-flash firmware as far as it runs without a chip: the image read and matched to its
chip, the offset and the equivalent esptool command, and clear errors from esptool's own
connection attempt on a port with no chip behind it."""

import struct

import pytest
import serial
from edge_flash.cli import main
from edge_flash.esp import FlashError, check_chip, flash, plan_flash, read_image


def esp_image(path, chip_id: int, size: int = 4096):
    """An image as MicroPython's downloads start: ESP image header, extended header with the chip id."""
    header = struct.pack("<BBBBI", 0xE9, 3, 2, 0x20, 0x40080000)
    extended = struct.pack("<B3sHBHH4sB", 0xEE, b"\0\0\0", chip_id, 0, 0, 0xFFFF, b"\0" * 4, 1)
    path.write_bytes(header + extended + bytes(size - 24))
    return path


@pytest.mark.parametrize(
    ("chip_id", "chip", "offset"),
    [(0, "esp32", 0x1000), (2, "esp32s2", 0x1000), (9, "esp32s3", 0x0), (5, "esp32c3", 0x0), (13, "esp32c6", 0x0)],
)
def test_image_chip_and_offset(tmp_path, chip_id, chip, offset):
    image = esp_image(tmp_path / "fw.bin", chip_id)
    plan = plan_flash("/dev/ttyUSB0", image)
    assert (plan.image.chip, plan.offset) == (chip, offset)
    assert plan.command() == [
        "esptool",
        "--chip",
        chip,
        "--port",
        "/dev/ttyUSB0",
        "--baud",
        "460800",
        "write-flash",
        "--erase-all",
        f"{offset:#x}",
        str(image),
    ]
    keep = plan_flash("/dev/ttyUSB0", image, baud=115200, erase=False)
    assert keep.command()[6:9] == ["115200", "write-flash", f"{offset:#x}"]


def test_image_errors(tmp_path):
    with pytest.raises(FlashError, match=r"image .*missing.bin: no such file"):
        read_image(tmp_path / "missing.bin")
    (tmp_path / "app.py").write_text("print('not an image')\n")
    with pytest.raises(FlashError, match=r"not an ESP firmware image \(no 0xe9 header at its start\)"):
        read_image(tmp_path / "app.py")
    with pytest.raises(FlashError, match=r"built for an unknown chip \(id 4242\)"):
        read_image(esp_image(tmp_path / "odd.bin", 4242))
    with pytest.raises(FlashError, match=r"fw.bin is for esp32s3, not esp32$"):
        plan_flash("/dev/ttyUSB0", esp_image(tmp_path / "fw.bin", 9), chip="esp32")


def test_wrong_chip_is_refused_with_both_names(tmp_path):
    image = read_image(esp_image(tmp_path / "fw.bin", 0))
    check_chip("esp32", image)
    with pytest.raises(
        FlashError, match=r"wrong chip: the board is an ESP32-S3, .*fw.bin is for ESP32; nothing was written"
    ):
        check_chip("esp32s3", image)


def test_no_chip_behind_the_port(tmp_path, pty_pair):
    plan = plan_flash("/dev/ttyUSB-none", esp_image(tmp_path / "fw.bin", 0))
    with pytest.raises(FlashError, match=r"^no port /dev/ttyUSB-none: no such device"):
        flash(plan)
    _, far_end = pty_pair
    plan = plan_flash(far_end, plan.image.path)
    with pytest.raises(
        FlashError,
        match=rf"^no ESP chip answered on {far_end}: Failed to connect to Espressif "
        r"device: No serial data received\. \(hold BOOT while pressing EN/RESET",
    ):
        flash(plan, connect_attempts=1)
    with serial.Serial(far_end, exclusive=True):
        with pytest.raises(FlashError, match=rf"^port {far_end} is busy"):
            flash(plan)


def test_cli_firmware(tmp_path, capsys):
    image = esp_image(tmp_path / "fw.bin", 9)
    assert main(["firmware", "--port", "/dev/ttyUSB0", "--image", str(image), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "image for esp32s3, 4096 bytes, written at 0x0" in out
    assert f"esptool --chip esp32s3 --port /dev/ttyUSB0 --baud 460800 write-flash --erase-all 0x0 {image}" in out
    assert main(["firmware", "--port", "/dev/ttyUSB0", "--image", str(tmp_path / "none.bin")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["firmware", "--port", "/dev/ttyUSB-none", "--image", str(image)]) == 1
    assert "error: no port /dev/ttyUSB-none" in capsys.readouterr().err
