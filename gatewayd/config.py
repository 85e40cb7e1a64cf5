"""gatewayd configuration: TOML, typed and validated at start, unknown keys rejected."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatewayd.detection.rules import DEFAULT_BUDGET, DEFAULT_FOLLOW_WINDOWS, DEFAULT_SCORES
from gatewayd.errors import GatewayError
from gatewayd.models.scaling import SCALE_FLOOR

DEFAULT_CONFIG_PATH = Path("/etc/gatewayd/gatewayd.toml")

MIN_TOKEN_CHARS = 16  # the dashboard's token: guessing it over HTTP must be hopeless

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ConfigError(GatewayError):
    """A configuration file that cannot be used; the message names file, line and key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GatewaySection(_Section):
    name: Name = Field("gateway", description="Identifies this gateway in MQTT topics and uploads.")
    state_dir: str = Field("/var/lib/gatewayd", description="Directory for the database and models.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    runtime_dir: str | None = Field(
        None,
        description="Where the running daemon keeps its status (status.json); default: state_dir. "
        "On tmpfs (/run/gatewayd, as packaged) it stays current when the state directory's disk fails.",
    )
    trust_clock: Literal["synchronized", "always"] = Field(
        "synchronized",
        description="synchronized: readings stamped while the kernel says the clock is not "
        "synchronised yet (NTP) are marked; always: a clock kept by a real-time clock or by hand, never marked.",
    )

    @field_validator("state_dir")
    @classmethod
    def _a_directory(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a directory (an empty path would put the store in the working directory)")
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        return value


class StoreSection(_Section):
    batch_size: int = Field(
        50_000,
        ge=1,
        le=1_000_000,
        description="Readings written per transaction at most; each channel's share becomes one block.",
    )
    flush_interval_s: float = Field(1.0, gt=0, le=60, description="Longest time a reading waits in memory.")
    queue_readings: int = Field(
        50_000, ge=1000, description="Readings held in memory before polling waits (about 80 bytes each)."
    )
    compact_after_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Blocks older than this are merged into blocks of up to 4096 readings (run as often).",
    )

    checkpoint_interval_s: float = Field(
        10.0,
        ge=1,
        le=3600,
        description="WAL checkpoint period: the most a power cut can take back (see docs/store.md).",
    )
    disk_budget_mb: float = Field(
        2048.0,
        gt=0,
        description="Data kept on disk at most; past it, routine data is evicted oldest first (alerts never).",
    )

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> StoreSection:
        if self.queue_readings < self.batch_size:
            raise ValueError(f"queue_readings ({self.queue_readings}) must hold at least one batch ({self.batch_size})")
        return self


class MqttSection(_Section):
    host: str = Field(min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password_file: str | None = Field(None, description="File holding the password (kept out of this file).")
    ca_file: str | None = Field(None, description="CA bundle: when set, the connection uses TLS.")
    topic_prefix: str = Field("gateway", pattern=r"^[^#+]+$", description="Topics are <prefix>/<gateway name>/...")
    telemetry: Literal["readings", "summaries", "off"] = Field(
        "readings", description="Publish every poll's readings, each minute's statistics, or nothing."
    )
    keepalive_s: int = Field(30, ge=5, le=3600)
    home_assistant: bool = Field(False, description="Publish Home Assistant MQTT discovery for every channel.")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+]+$")
    backlog_messages: int = Field(100_000, ge=100, description="Unpublished messages kept in SQLite at most.")
    command_secret_file: str | None = Field(
        None,
        description="File holding the shared secret that signs commands on .../command (docs/mqtt.md); "
        "16 characters at least, must not be world-readable.",
    )
    accept_unauthenticated_commands: bool = Field(
        False,
        description="Apply unsigned commands: only where the broker's ACLs let no one else publish on .../command.",
    )


SparkplugId = Annotated[str, Field(pattern=r"^[^/+#]{1,64}$")]


class SparkplugSection(_Section):
    """Sparkplug B beside the plain JSON topics, on the [mqtt] broker (docs/sparkplug.md)."""

    enabled: bool = False
    group_id: SparkplugId = Field("gatewayd", description="The Sparkplug group the gateway's edge node is in.")
    edge_node_id: SparkplugId | None = Field(None, description="The edge node's id; default: the gateway's name.")


class BusSection(_Section):
    name: Name
    port: str = Field(min_length=1, description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baud: int = Field(19200, ge=1200, le=1_000_000)
    parity: Literal["N", "E", "O"] = "E"
    stop_bits: Literal[1, 2] = 1
    timeout_s: float = Field(0.5, ge=0.05, le=10, description="Response timeout of one request.")


class EndpointSection(_Section):
    """A Modbus TCP server that several devices (unit ids) sit behind, when it takes more than
    one connection. Devices on the same host and port always share its connections."""

    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    connections: int = Field(
        1, ge=1, le=8, description="Connections the gateway opens to it at most (many servers accept 1 to 8)."
    )


DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bit"]


class RegisterSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]
    table: Literal["holding", "input", "coil", "discrete"] = "holding"
    address: int = Field(ge=0, le=65535, description="0-based protocol address.")
    type: DataType = "uint16"
    word_order: Literal["big", "little"] = Field("big", description="big: first register holds the high word.")
    byte_order: Literal["big", "little"] = Field("big", description="little: bytes swapped inside each register.")
    scale: float = 1.0
    offset: float = 0.0
    unit: str = Field("", max_length=8)
    device_class: str | None = Field(
        None, pattern=r"^[a-z_]{1,40}$", description="Home Assistant device class, when the unit does not say it."
    )

    @model_validator(mode="after")
    def _type_fits_table(self) -> RegisterSection:
        bits = self.table in ("coil", "discrete")
        if bits != (self.type == "bit"):
            raise ValueError(
                f"type {self.type!r} does not fit table {self.table!r}: coils and discrete inputs are 'bit'"
            )
        return self


class DeviceSection(_Section):
    name: Name
    profile: Literal["edge-node", "generic"] = Field("edge-node", description="Register layout of the device.")
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str | None = Field(None, min_length=1, description="TCP: host name or address.")
    port: int = Field(502, ge=1, le=65535)
    bus: str | None = Field(None, description="RTU: name of a [[buses]] entry.")
    unit: int = Field(1, ge=1, le=247, description="Modbus unit (slave) id.")
    interval_s: float = Field(1.0, ge=0.05, le=3600, description="Poll period on the monotonic clock.")
    timeout_s: float = Field(1.0, ge=0.05, le=60, description="Response timeout of one request.")
    registers: list[RegisterSection] = Field(default_factory=list, description="generic profile: what to read.")

    @model_validator(mode="after")
    def _transport_and_profile(self) -> DeviceSection:
        if self.transport == "tcp" and self.host is None:
            raise ValueError("a tcp device needs host")
        if self.transport == "rtu" and self.bus is None:
            raise ValueError("an rtu device needs bus")
        if self.profile == "generic" and not self.registers:
            raise ValueError("a generic device needs [[devices.registers]]")
        if self.profile == "edge-node" and self.registers:
            raise ValueError("an edge-node device reads its own register map; registers are for profile 'generic'")
        names = [r.name for r in self.registers]
        if len(set(names)) != len(names):
            raise ValueError(f"register names are not unique: {names}")
        return self


def discovery_hints(device: DeviceSection) -> tuple[frozenset[str], dict[str, str]]:
    """A device's channels that are bits, and the Home Assistant device classes its registers name."""
    bits = frozenset(r.name for r in device.registers if r.type == "bit")
    return bits, {r.name: r.device_class for r in device.registers if r.device_class}


class ModelsSection(_Section):
    dir: str | None = Field(None, description="Installed model bundles; default: <state_dir>/models.")
    public_keys: list[str] = Field(
        default_factory=list, description="Ed25519 public keys (PEM files) a bundle's signature must verify with."
    )
    threads: int = Field(1, ge=1, le=8, description="Interpreter threads per model.")


class CloudSection(_Section):
    url: str = Field(pattern=r"^https?://", description="The cloud endpoint's base URL (docs/cloud-api.md).")
    token_file: str = Field(description="File holding this gateway's bearer token; must not be world-readable.")
    ca_file: str | None = Field(None, description="CA bundle for the endpoint's certificate (default: system CAs).")
    daily_budget_mb: float = Field(
        50.0, gt=0, description="Past it, only alerts and anomaly windows go up until tomorrow (UTC)."
    )
    batch_records: int = Field(500, ge=1, le=10_000, description="Records per upload at most.")
    interval_s: float = Field(10.0, gt=0, description="How often the outbox is looked at when idle.")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout.")
    max_backoff_s: float = Field(300.0, gt=0, description="Longest wait between retries while the cloud is away.")
    model_poll_s: float = Field(600.0, gt=0, description="How often new model bundles are looked for.")
    max_bundle_mb: float = Field(16.0, gt=0, description="Larger bundle downloads are refused.")


class SegmentSection(_Section):
    name: Name = Field(description="Bundle name shared by the segment's devices.")
    devices: list[Name] = Field(min_length=1, description="Devices of the same kind (same channels).")


class DetectionSection(_Section):
    enabled: bool = Field(True, description="Score windows with models and raise alerts.")
    window_s: float = Field(10.0, gt=0, le=3600, description="Window length.")
    hop_s: float = Field(5.0, gt=0, le=3600, description="A window closes every hop_s.")
    stats: list[Literal["mean", "std", "min", "max", "last", "slope"]] = Field(
        default_factory=lambda: ["mean"], min_length=1, description="Statistics per channel and window."
    )
    pairs: list[list[str]] = Field(
        default_factory=list,
        description='Channel pairs whose difference is a channel too, e.g. [["stage1", "stage2"]].',
    )
    fft_channels: list[str] = Field(default_factory=list, description="Fast channels that get FFT band energies.")
    fft_bands: int = Field(4, ge=1, le=64, description="Bands per FFT channel.")
    false_alarms_per_day: float = Field(
        DEFAULT_BUDGET,
        gt=0,
        le=10_000,
        description="False-alarm budget: each score's alarm level is set from the "
        "device's own calibration windows so that normal operation exceeds it this often (each window counted).",
    )
    scores: list[Literal["iforest", "autoencoder", "pca_t2", "pca_q"]] = Field(
        default_factory=lambda: list(DEFAULT_SCORES),
        min_length=1,
        max_length=4,
        description="Scores that decide (all are computed and shown): PCA T² and Q, autoencoder error, forest score.",
    )
    combine: Literal["any", "majority", "weighted"] = Field(
        "any", description="How the deciding scores' ratios combine."
    )
    weights: list[float] | None = Field(
        None,
        min_length=1,
        max_length=4,
        description="One weight per deciding score for combine = weighted (default: equal).",
    )
    scale_floor: float = Field(
        SCALE_FLOOR,
        ge=0,
        lt=1,
        description="Training: a feature's spread is at least this "
        "share of its level (changes within sensor accuracy never alarm alone).",
    )
    margins: list[float] | None = Field(
        None, description="Replaced by false_alarms_per_day; ignored (a warning is logged)."
    )
    baseline_follow_windows: float = Field(
        DEFAULT_FOLLOW_WINDOWS,
        ge=0,
        le=100_000,
        description="Time constant, in window lengths, with which the level "
        "the models compare against follows windows judged clearly normal (slow normal change); 0 keeps the "
        "training state.",
    )
    open_after: int = Field(3, ge=1, description="Alarming windows in a row that open an incident.")
    close_after: int = Field(5, ge=1, description="Quiet windows in a row that close it.")
    critical_ratio: float = Field(2.0, gt=1, description="Combined ratio at which an incident is critical.")
    false_alarm_rate: float | None = Field(
        None, description="Replaced by false_alarms_per_day; ignored (a warning is logged)."
    )
    trees: int = Field(100, ge=10, le=500, description="Isolation trees in locally trained models.")
    scope: Literal["device", "segment", "global"] = Field(
        "device",
        description="One model per device, per segment of similar devices, or one for all devices "
        "(each scaled by its own scaler).",
    )
    segments: list[SegmentSection] = Field(default_factory=list, description="With scope = segment.")
    bootstrap_minutes: float = Field(30.0, ge=0.5, description="Data collected before the first local training.")
    lifecycle: Literal["static", "periodic", "disposable"] = Field(
        "static",
        description="static: keep a model; periodic: retrain every retrain_hours from recent normal "
        "windows; disposable: the same, training on the last train_hours only and dropping the old bundle.",
    )
    retrain_hours: float = Field(24.0, gt=0, description="Retraining period (periodic, disposable).")
    train_hours: float = Field(4.0, gt=0, description="History a disposable model is trained on.")
    health_windows: int = Field(20, ge=1, description="A replacement bundle's health check: its first windows.")
    health_max_alert_rate: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Above this share of alarming windows in its health check, a bundle is rolled back.",
    )
    drift_threshold: float = Field(
        50.0, gt=0, description="Page-Hinkley threshold on scores and feature means, in standard deviations."
    )
    retrain_on_drift: bool = Field(False, description="Retrain from recent normal windows when drift is detected.")
    drift_alert_holdoff_s: float = Field(
        3600.0,
        ge=0,
        description="After a device's drift alert closes, no new one opens for it before this "
        "(changes meanwhile are logged once and counted, not alerted).",
    )
    min_precision: float = Field(0.8, ge=0, le=1, description="Feedback: below it, thresholds rise.")
    min_recall: float = Field(0.95, ge=0, le=1, description="Feedback: below it, thresholds fall.")
    multiplier_bounds: list[float] = Field(
        default_factory=lambda: [0.7, 2.0],
        min_length=2,
        max_length=2,
        description="Feedback never moves a threshold outside these factors.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DetectionSection:
        if self.hop_s > self.window_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s})")
        if self.weights is not None and len(self.weights) != len(self.scores):
            raise ValueError(
                f"weights needs one value per deciding score ({len(self.scores)}: {', '.join(self.scores)})"
            )
        lo, hi = self.multiplier_bounds
        if not 0 < lo <= 1 <= hi:
            raise ValueError("multiplier_bounds must satisfy 0 < low <= 1 <= high")
        if any(len(p) != 2 for p in self.pairs):
            raise ValueError("every pair needs exactly two channel names")
        if self.scope == "segment" and not self.segments:
            raise ValueError("scope = segment needs [[detection.segments]]")
        return self


def is_loopback(host: str) -> bool:
    """A host name or address that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DashboardSection(_Section):
    enabled: bool = Field(False, description="Serve the web dashboard (docs/dashboard.md).")
    host: str = Field(
        "127.0.0.1", min_length=1, description="Address to listen on; other than loopback needs token_file."
    )
    port: int = Field(8080, ge=1, le=65535)
    token_file: str | None = Field(
        None, description="File holding the operators' token (16 characters at least); must not be world-readable."
    )
    refresh_s: float = Field(2.0, ge=0.5, le=60, description="How often an open page asks for news.")

    @model_validator(mode="after")
    def _lan_needs_a_token(self) -> DashboardSection:
        if not is_loopback(self.host) and self.token_file is None:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines: set token_file "
                "(or bind to 127.0.0.1 and use an SSH tunnel)"
            )
        return self


class MetricsSection(_Section):
    """Prometheus metrics (docs/metrics.md), served on their own port."""

    enabled: bool = False
    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for a Prometheus on another host.")
    port: int = Field(9108, ge=1, le=65535)


class Config(_Section):
    gateway: GatewaySection = GatewaySection()
    store: StoreSection = StoreSection()
    models: ModelsSection = ModelsSection()
    detection: DetectionSection = DetectionSection()
    cloud: CloudSection | None = None
    mqtt: MqttSection | None = None
    dashboard: DashboardSection = DashboardSection()
    metrics: MetricsSection = MetricsSection()
    sparkplug: SparkplugSection = SparkplugSection()
    buses: list[BusSection] = Field(default_factory=list)
    endpoints: list[EndpointSection] = Field(default_factory=list)
    devices: list[DeviceSection] = Field(min_length=1)

    @field_validator("devices")
    @classmethod
    def _unique_names(cls, devices: list[DeviceSection]) -> list[DeviceSection]:
        seen: set[str] = set()
        for d in devices:
            if d.name in seen:
                raise ValueError(f"device name {d.name!r} is used twice")
            seen.add(d.name)
        return devices

    @model_validator(mode="after")
    def _unique_endpoints(self) -> Config:
        buses = {b.name for b in self.buses}
        if len(buses) != len(self.buses):
            raise ValueError("bus names are not unique")
        seen: dict[tuple, str] = {}
        for d in self.devices:
            if d.transport == "rtu" and d.bus not in buses:
                raise ValueError(f"device {d.name!r} uses bus {d.bus!r}, which no [[buses]] entry defines")
            key = (d.host, d.port, d.unit) if d.transport == "tcp" else ("rtu", d.bus, d.unit)
            where = f"{d.host}:{d.port}" if d.transport == "tcp" else f"bus {d.bus}"
            if key in seen:
                raise ValueError(f"devices {seen[key]!r} and {d.name!r} both poll {where} unit {d.unit}")
            seen[key] = d.name
        if self.sparkplug.enabled and self.mqtt is None:
            raise ValueError("sparkplug needs an [mqtt] section: its broker")
        servers = [(e.host, e.port) for e in self.endpoints]
        used = {(d.host, d.port) for d in self.devices if d.transport == "tcp"}
        for host, port in servers:
            if servers.count((host, port)) > 1:
                raise ValueError(f"endpoint {host}:{port} is listed twice")
            if (host, port) not in used:
                raise ValueError(f"endpoint {host}:{port}: no tcp device uses it")
        return self

    def tcp_endpoints(self) -> dict[tuple[str, int], tuple[int, float]]:
        """Every TCP server the devices sit behind: its connections, and its units' longest timeout."""
        connections = {(e.host, e.port): e.connections for e in self.endpoints}
        out: dict[tuple[str, int], tuple[int, float]] = {}
        for d in self.devices:
            if d.transport == "tcp" and d.host is not None:
                key = (d.host, d.port)
                longest = max(d.timeout_s, out[key][1]) if key in out else d.timeout_s
                out[key] = (connections.get(key, 1), longest)
        return out

    @property
    def state_path(self) -> Path:
        return Path(self.gateway.state_dir)

    @property
    def status_path(self) -> Path:
        """The running daemon's status file, read by `gatewayd status` and cloud-sync."""
        return Path(self.gateway.runtime_dir or self.gateway.state_dir) / "status.json"

    @property
    def models_path(self) -> Path:
        return Path(self.models.dir) if self.models.dir else self.state_path / "models"


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, text, source)) from None


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text: byte {raw[exc.start]:#04x} at column {column} "
            "(TOML files are UTF-8; save it as UTF-8)"
        ) from None
    config = parse_config(text, str(path))
    check_files(config, text, str(path))
    return config


def state_dir_problem(config: Config, text: str = "", source: str = "<config>") -> str | None:
    """Why the state directory cannot hold the store (as one line naming file, line and path),
    or None. A directory that does not exist yet is fine where it can be created."""
    path = config.state_path.absolute()
    line = locate(text, ("gateway", "state_dir"))
    where = f"{source}:{line}" if line else source
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{where}: gateway.state_dir: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        reason = (
            "the file system is read-only" if read_only else f"no write permission for this user (uid {os.getuid()})"
        )
        what = "cannot write to" if existing == path else f"cannot create {path}: cannot write to"
        return f"{where}: gateway.state_dir: {what} {existing}: {reason}"
    from gatewayd.store.database import DB_NAME

    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        if (path / name).exists() and not os.access(path / name, os.R_OK | os.W_OK):
            return f"{where}: gateway.state_dir: cannot write {path / name}: no permission for this user (uid {os.getuid()})"
    return None


def check_files(config: Config, text: str = "", source: str = "<config>") -> None:
    """Files the configuration points at: present, readable, and secrets not world-readable
    (tokens also long enough)."""

    def check(
        loc: tuple[str, ...],
        name: str | None,
        *,
        secret: bool = False,
        min_chars: int = 0,
        hint: str = "",
        label: str | None = None,
    ) -> None:
        if name is None:
            return
        line = locate(text, loc)
        where = f"{source}:{line}" if line else source
        label = label or ".".join(loc)
        try:
            mode = Path(name).stat().st_mode
            content = Path(name).read_bytes()
            token = content.decode("utf-8").strip() if min_chars else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{where}: {label}: cannot read {name}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        if secret and mode & 0o004:
            raise ConfigError(f"{where}: {label}: {name} is world-readable; chmod o-r it")
        if len(token) < min_chars:
            raise ConfigError(
                f"{where}: {label}: {name} holds {len(token)} characters, at least {min_chars} are needed (e.g. {hint})"
            )

    if config.cloud is not None:
        check(("cloud", "token_file"), config.cloud.token_file, secret=True)
        check(("cloud", "ca_file"), config.cloud.ca_file)
    check(
        ("dashboard", "token_file"),
        config.dashboard.token_file,
        secret=True,
        min_chars=MIN_TOKEN_CHARS,
        hint="openssl rand -hex 16",
    )
    for i, name in enumerate(config.models.public_keys):
        check(("models", "public_keys"), name, label=f"models.public_keys[{i}]")
    if config.mqtt is not None:
        check(("mqtt", "password_file"), config.mqtt.password_file, secret=True)
        check(("mqtt", "ca_file"), config.mqtt.ca_file)
        check(
            ("mqtt", "command_secret_file"),
            config.mqtt.command_secret_file,
            secret=True,
            min_chars=MIN_TOKEN_CHARS,
            hint="openssl rand -hex 32",
        )


def describe_validation_error(exc: ValidationError, text: str, source: str) -> str:
    """One line per error of a validated TOML document: file:line: key: what is wrong."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = locate(text, loc)
        where = f"{source}:{line}" if line else source
        detail = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            detail = "unknown key"
        elif "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict | list):
            detail = f"{detail} (got {err['input']!r})"
        lines.append(f"{where}: {key}: {detail}")
    return "\n".join(lines)


def locate(text: str, loc: tuple[str | int, ...]) -> int | None:
    """Line number (1-based) of a key path such as ('devices', 1, 'port'); when the key
    is missing, the line of the table that should hold it."""
    src = text.splitlines()

    def next_header(n: int) -> int:
        return next((m for m in range(n, len(src)) if src[m].lstrip().startswith("[")), len(src))

    start, end = 0, next_header(0)
    table, found = "", None
    for i, part in enumerate(loc):
        if isinstance(part, int):
            pattern = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
            hits = [n for n, line in enumerate(src) if pattern.match(line)]
            if part >= len(hits):
                return found
            found = hits[part] + 1
            start, end = hits[part] + 1, next_header(hits[part] + 1)
            continue
        key = re.compile(rf"^\s*[\"']?{re.escape(part)}[\"']?\s*=")
        for n in range(start, end):
            if key.match(src[n]):
                return n + 1
        table = f"{table}.{part}" if table else part
        if i + 1 < len(loc) and isinstance(loc[i + 1], int):
            continue
        pattern = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]")
        hits = [n for n, line in enumerate(src) if pattern.match(line)]
        if not hits:
            return found
        found = hits[0] + 1
        start, end = hits[0] + 1, next_header(hits[0] + 1)
    return found
