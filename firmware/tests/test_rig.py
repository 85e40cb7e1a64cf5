# The virtual board's I/O rig (hal_unix.RigInput): commands taken once, applied from the
# next sample, a channel given back to the plant on "clear", bad lines ignored.
import os
import time

import config
from hal_unix import RigInput, SimSampler, Watchdog
from helpers import assert_close, scratch


def sampler(path):
    cfg = config.from_dict({
        "node_id": 1, "reset_code": 1, "modbus": {"tcp": {}},
        "channels": [{"name": "t", "source": {"type": "sim", "signal": 2}, "resolution": 0.01,
                      "physical": [-40, 125], "bounds": [0, 60]}],
    })
    return SimSampler(cfg.channels, seed=3, dt_s=0.1, rig=RigInput(path)), cfg.channels[0]


def command(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def value(s, ch):
    s.update()
    return s.read(0) / ch.scale


def test_value_from_the_next_sample_then_back_to_the_plant():
    path = scratch("rig-value")
    s, ch = sampler(path)
    live = value(s, ch)
    command(path, "0 value 80.5\n")
    assert_close(value(s, ch), 80.5, 0.01)
    assert_close(value(s, ch), 80.5, 0.01)
    assert s.rig.taken == 1
    try:
        os.stat(path)
        raise AssertionError("the command was not taken")
    except OSError:
        pass
    command(path, "0 clear\n")
    assert_close(value(s, ch), live, 1.0)


def test_ramp_is_per_second_and_stuck_holds():
    path = scratch("rig-ramp")
    s, ch = sampler(path)
    value(s, ch)
    command(path, "0 ramp 10\n")
    first = value(s, ch)
    second = value(s, ch)
    assert_close(second - first, 1.0, 0.3)  # 10 per second at 100 ms a sample, plus plant noise
    command(path, "0 stuck\n")
    held = value(s, ch)
    for _ in range(5):
        assert value(s, ch) == held


def test_bad_lines_are_ignored():
    path = scratch("rig-bad")
    s, ch = sampler(path)
    live = value(s, ch)
    command(path, "7 value 1\n0 melt 3\nzero value 1\n\n0 value\n")
    assert abs(value(s, ch) - live) < 1.0
    assert s.rig.taken == 1


def test_watchdog_mirrors_its_feeds_to_a_file():
    path = scratch("wdt")
    wdt = Watchdog(1500, path)
    first = os.stat(path)[8]
    with open(path) as f:
        assert f.read() == "1500"
    time.sleep_ms(1100)  # os.stat gives whole seconds
    wdt.feed()
    wdt.feed()
    assert wdt.feeds == 2 and os.stat(path)[8] > first
    with open(path) as f:
        assert f.read() == "1500", "a feed rewrites the timeout in place"
