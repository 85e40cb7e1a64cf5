import config
import detectors as det
from helpers import scratch


def base(**overrides):
    ch = {"name": "p", "unit": "bar", "source": {"type": "sim", "signal": 0}, "resolution": 0.001,
          "physical": [0, 16], "bounds": [0.5, 5]}
    ch.update(overrides)
    return {"node_id": 2, "reset_code": 7, "channels": [ch], "modbus": {"tcp": {"port": 502}}}


def error(data):
    try:
        config.from_dict(data)
    except config.ConfigError as exc:
        return exc.message
    raise AssertionError("accepted")


def test_defaults_and_counts():
    cfg = config.from_dict(base())
    ch = cfg.channels[0]
    assert ch.k == 10 and ch.counts(1.5) == 1536
    assert ch.window_bits == 5 and ch.z_threshold == 4.0 and ch.consecutive == 1 and ch.clear_after == 1
    assert ch.severities[det.CHECK_HIGH] == det.SEVERITY_CRITICAL
    d = ch.detector()
    assert d.high == 5120 and d.physical_high == 16384


def test_errors_name_the_key():
    assert error(base(colour=1)) == "channels[0].colour: unknown key"
    assert error(base(zscore={"window": 24})).startswith("channels[0].zscore.window: must be a power of two")
    assert error(base(bounds=[0, 20])).startswith("channels[0].bounds: must lie within the physical range")
    assert error(base(resolution=1e-6)).startswith("channels[0].resolution: too fine")
    assert error(base(trips=["nope"])) == "channels[0].trips: no output named 'nope'"
    assert error(base(rate={"limit": 1, "horizon_s": 30})).startswith("channels[0].rate.horizon_s: must be 1..255")
    assert error(base(severity={"high": "loud"})) == "channels[0].severity.high: one of off, warning, critical"
    data = base()
    del data["reset_code"]
    assert error(data) == "reset_code: required"
    data = base()
    data["modbus"] = {}
    assert error(data) == "modbus: configure tcp, rtu or both"


def test_clear_after_defaults_to_consecutive_and_reaches_the_detector():
    ch = config.from_dict(base(consecutive=3)).channels[0]
    assert ch.clear_after == 3 and ch.detector().clear_after == 3
    ch = config.from_dict(base(consecutive=2, clear_after=120)).channels[0]
    d = ch.detector()
    assert (d.consecutive, d.clear_after) == (2, 120)
    assert error(base(clear_after=0)).startswith("channels[0].clear_after: must be within 1..10000")
    assert error(base(clear_after=10001)).startswith("channels[0].clear_after: must be within 1..10000")


def test_checks_can_be_off_but_not_the_fault_check():
    ch = config.from_dict(base(severity={"stuck": "off", "zscore": "off"})).channels[0]
    assert ch.detector().enabled == det.FLAG_FAULT | det.FLAG_LOW | det.FLAG_HIGH | det.FLAG_RATE
    assert error(base(severity={"fault": "off"})) == "channels[0].severity.fault: one of warning, critical"


def test_syntax_errors():
    for text, code in (("{", config.ERR_SYNTAX), ("[]", config.ERR_SYNTAX)):
        try:
            config.parse(text)
        except config.ConfigError as exc:
            assert exc.code == code
            continue
        raise AssertionError("accepted %r" % text)
    try:
        config.load("/nonexistent/config.json")
    except config.ConfigError as exc:
        assert exc.code == config.ERR_MISSING
    else:
        raise AssertionError("accepted a missing file")
    # The file is parsed from the stream: the same errors as from text.
    path = scratch("config-syntax.json")
    for text in ('{"node_id": 2,', "[1, 2]", ""):
        with open(path, "w") as f:
            f.write(text)
        try:
            config.load(path)
        except config.ConfigError as exc:
            assert exc.code == config.ERR_SYNTAX, (text, exc.code)
            continue
        raise AssertionError("accepted %r" % text)


def test_a_file_loads_as_its_text_parses():
    import json

    path = scratch("config-good.json")
    with open(path, "w") as f:
        f.write(json.dumps(base()))
    cfg = config.load(path)
    assert cfg.node_id == 2 and cfg.reset_code == 7 and cfg.channels[0].name == "p"
    assert cfg.channels[0].bounds == config.parse(json.dumps(base())).channels[0].bounds


def test_transports_survive_a_broken_channel_section():
    path = scratch("config-fallback.json")
    with open(path, "w") as f:
        f.write('{"node_id": 9, "modbus": {"tcp": {"port": 1502}}, "channels": "oops"}')
    cfg = config.transports_only(path)
    assert cfg.node_id == 9 and cfg.tcp == {"port": 1502} and cfg.channels == []


def test_channel_period_must_be_a_multiple():
    assert error(base(sample_period_ms=150)) == "channels[0].sample_period_ms: must be a multiple of the node's 100 ms"
    assert error(base(sample_period_ms=50)).startswith("channels[0].sample_period_ms: must be within 100..")


def test_validation_leaves_the_callers_data_unless_asked_to_consume_it():
    import json

    data = base()
    data["channels"].append(dict(data["channels"][0], name="q"))
    before = json.dumps(data)
    config.from_dict(data)
    assert json.dumps(data) == before
    cfg = config.from_dict(data, consume=True)  # as load() does at boot
    assert data["channels"] == [None, None]
    assert [ch.name for ch in cfg.channels] == ["p", "q"]


def test_steps_yield_after_the_settings_and_each_channel_and_release_the_json():
    data = base()
    data["channels"].append(dict(data["channels"][0], name="q"))
    seen = []
    for cfg in config.steps(data, consume=True):
        seen.append((len(cfg.channels), data["channels"].count(None)))
    assert seen == [(0, 0), (1, 1), (2, 2), (2, 2)]
    assert cfg.channels[1].name == "q" and cfg.tcp == {"port": 502}
    # an error in a later channel surfaces at its own step, naming it
    data = base()
    data["channels"].append(dict(data["channels"][0], name="p"))
    steps = config.steps(data)
    next(steps), next(steps)
    try:
        next(steps)
    except config.ConfigError as exc:
        assert exc.message == "channels[1].name: used twice"
    else:
        raise AssertionError("accepted")
