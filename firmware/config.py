# Node configuration: a JSON file on the node's flash, validated at boot. Errors name the
# key ("channels[1].zscore.window: ...") so the REPL and the status register can say what
# is wrong; a node with a bad file stays in its safe state. Only boot needs this module: the
# result is plain config_model objects, and the application unloads it to free its RAM.
import gc
import json

import detectors as det
import regmap
from config_model import ERR_INVALID, ERR_MISSING, ERR_NONE, ERR_SYNTAX, ChannelConfig, NodeConfig, Source  # noqa: F401

SEVERITIES = {"off": det.SEVERITY_OFF, "warning": det.SEVERITY_WARNING, "critical": det.SEVERITY_CRITICAL}
CHECK_NAMES = ("fault", "stuck", "low", "high", "zscore", "rate")
DEFAULT_SEVERITY = ("critical", "warning", "critical", "critical", "warning", "warning")
MAX_K = 20
MAX_OUTPUTS = 8



class ConfigError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _fail(path, message):
    raise ConfigError(ERR_INVALID, "%s: %s" % (path, message))


def _get(obj, key, path, kind, default=None, required=False):
    if key not in obj:
        if required:
            _fail(path + key, "required")
        return default
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(path + key, "expected %s, got %r" % (kind.__name__, value))
    return value


def _known(obj, keys, path):
    for key in obj:
        if key not in keys:
            _fail(path + key, "unknown key")


def _num(obj, key, path, low, high, default=None, required=False, kind=float):
    value = _get(obj, key, path, kind, default, required)
    if value is not None and not low <= value <= high:
        _fail(path + key, "must be within %s..%s, got %s" % (low, high, value))
    return value


def resolution_bits(resolution):
    """k such that one count, 2**-k, is no coarser than `resolution`."""
    k = 0
    while (1.0 / (1 << k)) > resolution and k < MAX_K:
        k += 1
    return k


def _pair(obj, key, path, required=True):
    value = _get(obj, key, path, list, None, required)
    if value is None:
        return None
    if len(value) != 2:
        _fail(path + key, "expected [low, high]")
    for v in value:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            _fail(path + key, "expected numbers, got %r" % (v,))
    if not value[0] < value[1]:
        _fail(path + key, "low must be below high, got %r" % (value,))
    return (float(value[0]), float(value[1]))


def _channel(obj, path, period_ms, output_names):
    if not isinstance(obj, dict):
        _fail(path[:-1], "expected an object")
    _known(obj, ("name", "unit", "source", "sample_period_ms", "resolution", "physical", "bounds", "zscore",
                 "rate", "consecutive", "clear_after", "severity", "trips"), path)
    ch = ChannelConfig()
    ch.name = _get(obj, "name", path, str, required=True)
    if not 0 < len(ch.name) <= 12:
        _fail(path + "name", "1..12 characters")
    ch.unit = _get(obj, "unit", path, str, "")
    own = _num(obj, "sample_period_ms", path, period_ms, 3600000, period_ms, kind=int)
    if own % period_ms:
        _fail(path + "sample_period_ms", "must be a multiple of the node's %d ms" % period_ms)
    ch.divider = own // period_ms
    period_ms = own
    if len(ch.unit) > 4:
        _fail(path + "unit", "at most 4 characters")
    resolution = _num(obj, "resolution", path, 1e-6, 1000.0, required=True)
    ch.k = resolution_bits(resolution)
    ch.scale = 1 << ch.k
    ch.physical = _pair(obj, "physical", path)
    limit = max(abs(ch.physical[0]), abs(ch.physical[1])) * ch.scale
    if limit >= det.MAX_COUNTS:
        _fail(path + "resolution", "too fine for the physical range (%g counts, at most %d)" % (limit, det.MAX_COUNTS))
    ch.bounds = _pair(obj, "bounds", path)
    if ch.bounds[0] < ch.physical[0] or ch.bounds[1] > ch.physical[1]:
        _fail(path + "bounds", "must lie within the physical range %r" % (ch.physical,))
    z = _get(obj, "zscore", path, dict, {})
    _known(z, ("window", "threshold", "tunable"), path + "zscore.")
    window = _num(z, "window", path + "zscore.", 8, 64, 32, kind=int)
    if window & (window - 1):
        _fail(path + "zscore.window", "must be a power of two (8, 16, 32 or 64)")
    ch.window_bits = 0
    while (1 << ch.window_bits) < window:
        ch.window_bits += 1
    ch.z_threshold = _num(z, "threshold", path + "zscore.", 1.0, 100.0, 4.0)
    tunable = _pair(z, "tunable", path + "zscore.", required=False) or (1.0, ch.z_threshold)
    if not tunable[0] <= ch.z_threshold <= tunable[1] or tunable[0] < 1.0:
        _fail(path + "zscore.tunable", "must contain the threshold and start at 1 or above")
    ch.z_tunable = tunable
    rate = _get(obj, "rate", path, dict, None)
    if rate is not None:
        _known(rate, ("limit", "horizon_s"), path + "rate.")
        ch.rate_limit = _num(rate, "limit", path + "rate.", 0.0, 1e6, required=True)
        horizon_s = _num(rate, "horizon_s", path + "rate.", 0.0, 3600.0, required=True)
        ch.rate_horizon = int(horizon_s * 1000 / period_ms + 0.5)
        if not 1 <= ch.rate_horizon <= det.MAX_HORIZON:
            _fail(path + "rate.horizon_s", "must be 1..%d sample periods (%d ms each)" % (det.MAX_HORIZON, period_ms))
    ch.consecutive = _num(obj, "consecutive", path, 1, 1000, 1, kind=int)
    ch.clear_after = _num(obj, "clear_after", path, 1, det.MAX_CLEAR_AFTER, ch.consecutive, kind=int)
    sev = _get(obj, "severity", path, dict, {})
    _known(sev, CHECK_NAMES, path + "severity.")
    for i in range(det.CHECKS):
        name = _get(sev, CHECK_NAMES[i], path + "severity.", str, DEFAULT_SEVERITY[i])
        if name not in SEVERITIES:
            _fail(path + "severity." + CHECK_NAMES[i], "one of off, warning, critical")
        ch.severities[i] = SEVERITIES[name]
    if ch.severities[det.CHECK_FAULT] == det.SEVERITY_OFF:
        # a faulty sensor must keep the node from vouching for the plant
        _fail(path + "severity.fault", "one of warning, critical")
    for out in _get(obj, "trips", path, list, []):
        if out not in output_names:
            _fail(path + "trips", "no output named %r" % (out,))
        ch.trips |= 1 << output_names.index(out)
    ch.source = _source(_get(obj, "source", path, dict, required=True), path + "source.")
    return ch


def _source(obj, path):
    kind = _get(obj, "type", path, str, required=True)
    if kind == "adc":
        _known(obj, ("type", "pin", "raw", "value", "fault_below", "fault_above"), path)
        params = {
            "pin": _num(obj, "pin", path, 0, 48, required=True, kind=int),
            "raw": _pair(obj, "raw", path, required=False) or (0.0, 4095.0),
            "value": _pair(obj, "value", path),
            "fault_below": _num(obj, "fault_below", path, -1, 4096, -1, kind=int),
            "fault_above": _num(obj, "fault_above", path, 0, 4096, 4096, kind=int),
        }
    elif kind == "driver":
        _known(obj, ("type", "driver", "options"), path)
        params = {"driver": _get(obj, "driver", path, str, required=True), "options": _get(obj, "options", path, dict, {})}
    elif kind == "sim":
        _known(obj, ("type", "signal"), path)
        params = {"signal": _num(obj, "signal", path, 0, 15, required=True, kind=int)}
    else:
        _fail(path + "type", "one of adc, driver, sim; got %r" % (kind,))
    return Source(kind, params)


def parse(text):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(ERR_SYNTAX, "not valid JSON: %s" % exc)
    return from_dict(_checked(data), consume=True)


def _checked(data):
    if not isinstance(data, dict):
        raise ConfigError(ERR_SYNTAX, "top level must be an object")
    return data


def from_dict(data, consume=False):
    """The node's configuration from parsed JSON. With `consume`, each channel's JSON is
    released as soon as it is validated (the caller's dict loses its channels) and collected:
    at boot the parsed file and the configuration objects then never sit in the heap
    together."""
    for cfg in steps(data, consume):
        if consume:
            gc.collect()
    return cfg


def steps(data, consume=False):
    """from_dict a step at a time, for a boot that collects garbage between steps: yields the
    configuration being built after the node's settings and after each channel, and the last
    time complete."""
    _known(data, ("node_id", "sample_period_ms", "reset_code", "reset_pin", "outputs", "channels",
                  "modbus", "wifi", "watchdog_ms"), "")
    cfg = NodeConfig()
    cfg.node_id = _num(data, "node_id", "", 1, 247, required=True, kind=int)
    cfg.sample_period_ms = _num(data, "sample_period_ms", "", 10, 60000, 100, kind=int)
    cfg.reset_code = _num(data, "reset_code", "", 1, 65535, required=True, kind=int)
    cfg.reset_pin = _num(data, "reset_pin", "", 0, 48, None, kind=int)
    cfg.watchdog_ms = _num(data, "watchdog_ms", "", 0, 60000, 0, kind=int)
    if cfg.watchdog_ms and cfg.watchdog_ms < 4 * cfg.sample_period_ms:
        _fail("watchdog_ms", "must be 0 (off) or at least 4 sample periods")
    names = []
    for i, out in enumerate(_get(data, "outputs", "", list, [])):
        path = "outputs[%d]." % i
        if not isinstance(out, dict):
            _fail(path[:-1], "expected an object")
        _known(out, ("name", "pin", "active_high"), path)
        name = _get(out, "name", path, str, required=True)
        if name in names:
            _fail(path + "name", "used twice")
        names.append(name)
        cfg.outputs.append((name, _num(out, "pin", path, 0, 48, required=True, kind=int),
                            _get(out, "active_high", path, bool, True)))
    if len(names) > MAX_OUTPUTS:
        _fail("outputs", "at most %d" % MAX_OUTPUTS)
    channels = _get(data, "channels", "", list, required=True)
    if not 1 <= len(channels) <= regmap.MAX_CHANNELS:
        _fail("channels", "1..%d channels" % regmap.MAX_CHANNELS)
    yield cfg
    for i in range(len(channels)):
        ch = _channel(channels[i], "channels[%d]." % i, cfg.sample_period_ms, names)
        for other in cfg.channels:
            if other.name == ch.name:
                _fail("channels[%d].name" % i, "used twice")
        cfg.channels.append(ch)
        if consume:
            channels[i] = None
        yield cfg
    modbus = _get(data, "modbus", "", dict, {})
    _known(modbus, ("tcp", "rtu"), "modbus.")
    tcp = _get(modbus, "tcp", "modbus.", dict, None)
    if tcp is not None:
        _known(tcp, ("port",), "modbus.tcp.")
        cfg.tcp = {"port": _num(tcp, "port", "modbus.tcp.", 1, 65535, 502, kind=int)}
    rtu = _get(modbus, "rtu", "modbus.", dict, None)
    if rtu is not None:
        p = "modbus.rtu."
        _known(rtu, ("uart", "device", "baud", "parity", "stop_bits", "tx", "rx", "de"), p)
        parity = _get(rtu, "parity", p, str, "E")
        if parity not in ("N", "E", "O"):
            _fail(p + "parity", "one of N, E, O")
        cfg.rtu = {
            "uart": _num(rtu, "uart", p, 0, 2, 1, kind=int),
            "device": _get(rtu, "device", p, str, None),
            "baud": _num(rtu, "baud", p, 1200, 1000000, 19200, kind=int),
            "parity": parity,
            "stop_bits": _num(rtu, "stop_bits", p, 1, 2, 1, kind=int),
            "tx": _num(rtu, "tx", p, 0, 48, None, kind=int),
            "rx": _num(rtu, "rx", p, 0, 48, None, kind=int),
            "de": _num(rtu, "de", p, 0, 48, None, kind=int),
        }
    wifi = _get(data, "wifi", "", dict, None)
    if wifi is not None:
        _known(wifi, ("ssid", "password"), "wifi.")
        cfg.wifi = (_get(wifi, "ssid", "wifi.", str, required=True), _get(wifi, "password", "wifi.", str, ""))
    if cfg.tcp is None and cfg.rtu is None:
        _fail("modbus", "configure tcp, rtu or both")
    yield cfg


def load(path):
    """The node's configuration from the file at `path`, collecting garbage after each channel."""
    for cfg in load_steps(path):
        gc.collect()
    return cfg


def load_steps(path):
    """load a step at a time (see steps); the file is read and parsed by this call, before
    the first step."""
    # Parsed from the stream: no copy of the whole text in the heap at boot.
    try:
        f = open(path)
    except OSError:
        raise ConfigError(ERR_MISSING, "%s: cannot read" % path)
    try:
        data = json.load(f)
    except ValueError as exc:
        raise ConfigError(ERR_SYNTAX, "not valid JSON: %s" % exc)
    except OSError:
        raise ConfigError(ERR_MISSING, "%s: cannot read" % path)
    finally:
        f.close()
    return steps(_checked(data), consume=True)


def transports_only(path):
    """Node id and Modbus settings from a file whose full validation failed, so the node
    can still report its configuration error over Modbus. Raises ConfigError if even
    those cannot be read."""
    try:
        with open(path) as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        raise ConfigError(ERR_SYNTAX, "no usable Modbus settings")
    if not isinstance(data, dict):
        raise ConfigError(ERR_SYNTAX, "no usable Modbus settings")
    minimal = {"node_id": data.get("node_id", 1), "reset_code": 1, "modbus": data.get("modbus", {}),
               "channels": [{"name": "none", "source": {"type": "sim", "signal": 0}, "resolution": 1,
                             "physical": [0, 1], "bounds": [0, 1]}]}
    if "wifi" in data:
        minimal["wifi"] = data["wifi"]
    cfg = from_dict(minimal)
    cfg.channels = []
    return cfg
