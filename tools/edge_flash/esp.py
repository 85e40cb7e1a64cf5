"""edge-flash firmware: write a MicroPython image to an ESP chip through esptool's public
API: detect the chip, check the image was built for it, erase, write at the chip's
bootloader offset, verify, reset.

The image is read and checked before the port is opened: a missing file or an image for
another chip never gets as far as erasing a board.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from esptool.cmds import attach_flash, detect_chip, erase_flash, reset_chip, run_stub, verify_flash, write_flash
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError

from edge_flash.device import BoardError, check_port, probe_port
from edge_flash.errors import EdgeFlashError

ROM_BAUD = 115200  # what every ESP ROM bootloader answers at
IMAGE_MAGIC = 0xE9


class FlashError(EdgeFlashError, RuntimeError):
    """The image was not written; the message says why and what to do."""


@dataclass(frozen=True)
class Image:
    path: Path
    data: bytes
    chip: str  # esptool's name for the chip the image was built for, e.g. "esp32s3"


@dataclass(frozen=True)
class FlashPlan:
    port: str
    image: Image
    offset: int  # where the chip's ROM looks for the bootloader: the image's first byte goes there
    baud: int
    erase: bool

    def command(self) -> list[str]:
        """The same job as an esptool command line (printed, so a bench can do it by hand)."""
        cmd = ["esptool", "--chip", self.image.chip, "--port", self.port, "--baud", str(self.baud)]
        if self.erase:
            cmd += ["write-flash", "--erase-all"]
        else:
            cmd += ["write-flash"]
        return cmd + [f"{self.offset:#x}", str(self.image.path)]


def chip_of_image_id(chip_id: int) -> str | None:
    for name, rom in CHIP_DEFS.items():
        if vars(rom).get("IMAGE_CHIP_ID") == chip_id:
            return name
    return None


def chip_name(esptool_chip_name: str) -> str:
    """esptool's CHIP_NAME of a connected chip ("ESP32-S3") as its key ("esp32s3")."""
    for name, rom in CHIP_DEFS.items():
        if rom.CHIP_NAME == esptool_chip_name:
            return name
    return esptool_chip_name.lower().replace("-", "")


def read_image(path: Path) -> Image:
    """A MicroPython firmware image for an ESP32-family chip: the file as written at the
    bootloader offset, starting with an ESP image header whose extended header names the chip."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FlashError(f"image {path}: no such file (download one from https://micropython.org/download/)") from None
    except OSError as exc:
        raise FlashError(f"image {path}: cannot read: {exc.strerror}") from None
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise FlashError(f"image {path}: not an ESP firmware image (no {IMAGE_MAGIC:#x} header at its start)")
    # 8-byte header (magic, segments, mode, size and frequency, entry), then the extended
    # header: WP pin, 3 drive bytes, the chip id (uint16) ...
    (chip_id,) = struct.unpack_from("<H", data, 12)
    chip = chip_of_image_id(chip_id)
    if chip is None:
        raise FlashError(f"image {path}: built for an unknown chip (id {chip_id})")
    return Image(path, data, chip)


def plan_flash(
    port: str, image_path: Path, *, chip: str | None = None, baud: int = 460800, erase: bool = True
) -> FlashPlan:
    image = read_image(image_path)
    if chip is not None and chip != image.chip:
        raise FlashError(f"image {image_path} is for {image.chip}, not {chip}")
    return FlashPlan(port, image, CHIP_DEFS[image.chip].BOOTLOADER_FLASH_OFFSET, baud, erase)


def check_chip(connected: str, image: Image) -> None:
    if connected != image.chip:
        raise FlashError(
            f"wrong chip: the board is an {CHIP_DEFS[connected].CHIP_NAME if connected in CHIP_DEFS else connected}, "
            f"{image.path} is for {CHIP_DEFS[image.chip].CHIP_NAME}; nothing was written"
        )


def flash(plan: FlashPlan, *, connect_attempts: int = 3) -> str:
    """Write the image; returns the chip's description. esptool prints its own progress."""
    try:
        check_port(plan.port)
        if "://" not in plan.port:
            probe_port(plan.port)
    except BoardError as exc:
        raise FlashError(str(exc)) from None
    try:
        esp = detect_chip(plan.port, baud=ROM_BAUD, connect_attempts=connect_attempts)
    except FatalError as exc:
        raise FlashError(
            f"no ESP chip answered on {plan.port}: {str(exc).splitlines()[0]} "
            "(hold BOOT while pressing EN/RESET to enter the bootloader, or check the cable)"
        ) from None
    try:
        check_chip(chip_name(esp.CHIP_NAME), plan.image)
        description = esp.get_chip_description()
        esp = run_stub(esp)
        if plan.baud != ROM_BAUD:
            esp.change_baud(plan.baud)
        attach_flash(esp)
        if plan.erase:
            erase_flash(esp)
        write_flash(esp, [(plan.offset, plan.image.data)])
        verify_flash(esp, [(plan.offset, plan.image.data)])
        reset_chip(esp, "hard-reset")
        return description
    except FatalError as exc:
        raise FlashError(f"{plan.port}: {exc}") from None
    finally:
        esp._port.close()
