"""The fleet inventory: one TOML file naming every node, where it is plugged in, and what
its config.json must say. Each node's configuration is generated here and checked by the
firmware's own validator before any device is touched.

    [defaults]                  # merged under every node (tables key by key, lists whole)
    board = "esp32"
    sample_period_ms = 100
    ...
    [[nodes]]
    id = "pump-3"               # the node's name for edge-flash (--node)
    unit = 3                    # Modbus unit address (node_id in config.json)
    port = "/dev/ttyUSB0"       # or serial = "0001A2B3" (USB serial number)
    [nodes.thresholds.pressure] # this node's own limits for one channel
    bounds = [0.5, 4.5]

See docs/edge-flash.md for every key.
"""

from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_flash.errors import EdgeFlashError
from edge_flash.node_config import NodeConfigError, key_path, validate
from gatewayd.config import describe_validation_error, locate

BOARDS = ("esp32", "virtual")
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# Keys a node's config.json takes straight from the inventory (the firmware validates them).
PASSED_THROUGH = ("sample_period_ms", "reset_code", "reset_pin", "watchdog_ms", "outputs", "channels", "modbus")


class InventoryError(EdgeFlashError, ValueError):
    """An inventory that cannot be used; each line names file, line, node and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Wifi(_Section):
    ssid: str = Field(min_length=1, max_length=32)
    password: str | None = Field(None, description="In the file; prefer password_env.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")

    @model_validator(mode="after")
    def _one_password(self) -> Wifi:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give password or password_env, not both")
        return self


class NodeSettings(_Section):
    """What `[defaults]` and a node may both set."""

    board: Literal["esp32", "virtual"] | None = Field(None, description="esp32, or virtual (the unix port)")
    frozen: bool | None = Field(
        None,
        description="The board's MicroPython image has the application frozen in (firmware/frozen/manifest.py): "
        "deploy puts only main.py and config.json on its file system.",
    )
    sample_period_ms: int | None = None
    reset_code: int | None = None
    reset_pin: int | None = None
    watchdog_ms: int | None = None
    outputs: list[dict[str, Any]] | None = None
    channels: list[dict[str, Any]] | None = None
    modbus: dict[str, Any] | None = None
    wifi: Wifi | None = None
    thresholds: dict[str, dict[str, Any]] | None = Field(
        None, description="Per channel name: keys merged into that channel (bounds, zscore, rate ...)."
    )


class NodeEntry(NodeSettings):
    id: Name
    unit: int = Field(ge=1, le=247, description="Modbus unit address")
    port: str | None = Field(None, description="Serial port, or socket://HOST:PORT for a virtual board")
    serial: str | None = Field(None, description="USB serial number of the board's serial adapter")

    @model_validator(mode="after")
    def _one_address(self) -> NodeEntry:
        if self.port is not None and self.serial is not None:
            raise ValueError("give port or serial, not both")
        return self


class InventoryFile(_Section):
    defaults: NodeSettings = NodeSettings()
    nodes: list[NodeEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> InventoryFile:
        ids: set[str] = set()
        on: dict[str, str] = {}  # port or serial number -> node id
        for node in self.nodes:
            if node.id in ids:
                raise ValueError(f"node id {node.id!r} is used twice")
            ids.add(node.id)
            address = node.port or node.serial
            if address is not None and address in on:
                raise ValueError(f"nodes {on[address]!r} and {node.id!r} are both on {address}")
            if address is not None:
                on[address] = node.id
        return self


@dataclass(frozen=True)
class NodePlan:
    """One node, ready to deploy: its validated config.json and where to find it."""

    id: str
    unit: int
    board: str
    port: str | None
    serial: str | None
    config: dict[str, Any]
    config_json: str
    line: int | None
    frozen: bool = False  # the application is in the board's firmware image, not on its file system

    @property
    def channels(self) -> list[str]:
        return [c["name"] for c in self.config["channels"]]

    @property
    def address(self) -> str:
        return self.port or (f"serial {self.serial}" if self.serial else "(no port)")


@dataclass(frozen=True)
class Inventory:
    source: str
    text: str
    file: InventoryFile
    firmware_dir: Path

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.file.nodes]

    def index(self, node_id: str) -> int:
        try:
            return self.ids.index(node_id)
        except ValueError:
            raise InventoryError(f"{self.source}: no node {node_id!r} (nodes: {', '.join(self.ids)})") from None

    def plan(self, node_id: str, *, without_secrets: bool = False) -> NodePlan:
        """The node's configuration, generated and checked by the firmware's validator. With
        `without_secrets`, a secret whose environment variable is unset is left empty (a dry run
        checks everything else); otherwise it is refused."""
        i = self.index(node_id)
        node = self.file.nodes[i]
        merged = self._merged(i)
        where = self._where(i, ())
        try:
            config = self._config(merged, i, without_secrets=without_secrets)
            text = validate(config, self.firmware_dir)
        except NodeConfigError as exc:
            where = self._where(i, key_path(exc.key)) if exc.key else where
            raise InventoryError(f"{where}: node {node.id!r}: {exc}") from None
        except _Refused as exc:
            raise InventoryError(f"{self._where(i, exc.loc)}: node {node.id!r}: {exc.message}") from None
        return NodePlan(
            node.id,
            node.unit,
            merged.get("board", "esp32"),
            node.port,
            node.serial,
            config,
            text,
            locate(self.text, ("nodes", i)),
            frozen=merged.get("frozen", False),
        )

    def plans(self, *, without_secrets: bool = False) -> tuple[list[NodePlan], dict[str, InventoryError]]:
        """Every node: the valid ones planned, the others with their error (a fleet run goes on)."""
        plans, errors = [], {}
        for node_id in self.ids:
            try:
                plans.append(self.plan(node_id, without_secrets=without_secrets))
            except InventoryError as exc:
                errors[node_id] = exc
        return plans, errors

    def secrets(self) -> dict[str, list[str]]:
        """The environment variables a real run reads secrets from, each with the nodes that need it."""
        needed: dict[str, list[str]] = {}
        for i, node_id in enumerate(self.ids):
            variable = self._merged(i).get("wifi", {}).get("password_env")
            if variable is not None:
                needed.setdefault(variable, []).append(node_id)
        return needed

    def missing_secrets(self) -> dict[str, list[str]]:
        """The secrets' environment variables that are not set now, each with the nodes that need it."""
        return {variable: nodes for variable, nodes in self.secrets().items() if variable not in os.environ}

    def _merged(self, i: int) -> dict[str, Any]:
        return _merge(
            self.file.defaults.model_dump(exclude_none=True), self.file.nodes[i].model_dump(exclude_none=True)
        )

    def _config(self, merged: dict[str, Any], i: int, *, without_secrets: bool = False) -> dict[str, Any]:
        config: dict[str, Any] = {"node_id": merged["unit"]}
        for key in PASSED_THROUGH:
            if key in merged:
                config[key] = merged[key]
        if "wifi" in merged:
            wifi = merged["wifi"]
            password = wifi.get("password", "")
            if "password_env" in wifi:
                password = os.environ.get(wifi["password_env"])
                if password is None and without_secrets:
                    password = ""  # a dry run checks the rest of the node's configuration
                if password is None:
                    raise _Refused(("wifi", "password_env"), f"wifi.password_env: ${wifi['password_env']} is not set")
            config["wifi"] = {"ssid": wifi["ssid"], "password": password}
        for name, overrides in merged.get("thresholds", {}).items():
            channels = config.get("channels", [])
            match = [c for c in channels if c.get("name") == name]
            if not match:
                raise _Refused(("thresholds", name), f"thresholds.{name}: no channel named {name!r}")
            channels[channels.index(match[0])] = _merge(match[0], overrides)
        return config

    def _where(self, i: int, loc: tuple[str | int, ...]) -> str:
        """file:line of a key, in the node's own table if it sets it, else in [defaults]."""
        node = self.file.nodes[i].model_dump(exclude_none=True)
        line = None
        if loc and (_has(node, loc) or not _has(self.file.defaults.model_dump(exclude_none=True), loc)):
            line = locate(self.text, ("nodes", i, *loc))
        elif loc:
            line = locate(self.text, ("defaults", *loc))
        line = line or locate(self.text, ("nodes", i))
        return f"{self.source}:{line}" if line else self.source


class _Refused(Exception):
    def __init__(self, loc: tuple[str | int, ...], message: str):
        self.loc = loc
        self.message = message


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (lists included) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _has(data: Any, loc: tuple[str | int, ...]) -> bool:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def parse_inventory(text: str, source: str, firmware_dir: Path) -> Inventory:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{source}: not valid TOML: {exc}") from None
    try:
        parsed = InventoryFile.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(describe_validation_error(exc, text, source)) from None
    return Inventory(source, text, parsed, firmware_dir)


def load_inventory(path: str | Path, firmware_dir: Path) -> Inventory:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_inventory(text, str(path), firmware_dir)
