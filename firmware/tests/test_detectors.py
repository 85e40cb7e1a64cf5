import gc

import detectors as det
from detectors import ChannelDetector


def feed(d, values):
    out = 0
    for v in values:
        out = d.update(v)
    return out


def noise(n, seed=1, amplitude=50, level=0):
    # xorshift: deterministic and allocation-light, same in CPython and MicroPython
    x = seed
    out = []
    for _ in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(level + (x % (2 * amplitude + 1)) - amplitude)
    return out


def test_running_sums_are_exact_after_many_samples():
    d = ChannelDetector(window_bits=5)
    values = noise(1000, amplitude=400)
    for i in range(20000):
        d.update(values[i % 1000] + (i // 3000) * 700)  # level steps force re-anchoring
    window = [d.ring[(d.head - i) & d.mask] for i in range(1, d.window + 1)]
    assert d.sum == sum(window)
    expected_sq = sum(min(abs(v - d.ref), det.DEV_CLAMP) ** 2 for v in window)
    assert d.sum_sq == expected_sq
    assert d.reanchors > 0


def test_zscore_fires_on_a_spike_after_warmup():
    d = ChannelDetector(window_bits=5, z_limit=4 * det.Z_ONE, consecutive=1)
    assert feed(d, noise(64)) == 0
    assert d.update(2000) & det.FLAG_ZSCORE
    assert d.z16 > 4 * det.Z_ONE
    assert d.level == det.SEVERITY_WARNING


def test_no_zscore_before_the_window_is_full():
    d = ChannelDetector(window_bits=5, z_limit=16)
    feed(d, noise(10))
    assert d.update(5000) & det.FLAG_ZSCORE == 0


def test_hysteresis_needs_consecutive_hits_to_open_and_misses_to_close():
    d = ChannelDetector(window_bits=3, high=100, consecutive=3)
    feed(d, [0] * 8)
    assert d.update(150) == 0
    assert d.update(150) == 0
    assert d.update(150) & det.FLAG_HIGH
    assert d.level == det.SEVERITY_CRITICAL
    assert d.update(0) & det.FLAG_HIGH
    assert d.update(0) & det.FLAG_HIGH
    assert d.update(0) & det.FLAG_HIGH == 0
    # an interrupted run does not open
    feed(d, [150, 150, 0, 150, 150, 0])
    assert d.active & det.FLAG_HIGH == 0


def test_clear_after_holds_a_check_on_through_short_gaps():
    # alarm off-delay: one hit raises the check, it clears only after 5 misses in a row
    d = ChannelDetector(window_bits=3, high=100, consecutive=1, clear_after=5)
    assert d.update(150) & det.FLAG_HIGH
    for _ in range(4):
        assert d.update(0) & det.FLAG_HIGH
    assert d.update(150) & det.FLAG_HIGH  # a new hit restarts the count
    for _ in range(4):
        assert d.update(0) & det.FLAG_HIGH
    assert d.update(0) & det.FLAG_HIGH == 0
    assert d.level == det.SEVERITY_OFF
    for _ in range(3):
        d.update(0)
    assert d.settled  # the fast path resumes once every count is at its floor
    assert d.update(150) & det.FLAG_HIGH


def test_a_check_whose_severity_is_off_never_fires():
    sev = (det.SEVERITY_CRITICAL, det.SEVERITY_OFF, det.SEVERITY_CRITICAL, det.SEVERITY_OFF,
           det.SEVERITY_WARNING, det.SEVERITY_WARNING)
    d = ChannelDetector(window_bits=3, high=100, severities=sev)
    assert feed(d, [500] * 20) == 0  # above the high bound and flat: high and stuck are off
    assert d.raw == 0 and d.active == 0 and d.level == det.SEVERITY_OFF
    on = ChannelDetector(window_bits=3, high=100)
    assert feed(on, [500] * 20) == det.FLAG_HIGH | det.FLAG_STUCK


def test_low_bound_and_configured_severities():
    sev = (det.SEVERITY_CRITICAL, det.SEVERITY_WARNING, det.SEVERITY_WARNING, det.SEVERITY_CRITICAL,
           det.SEVERITY_OFF, det.SEVERITY_OFF)
    d = ChannelDetector(window_bits=3, low=-100, severities=sev)
    assert d.update(-101) & det.FLAG_LOW
    assert d.level == det.SEVERITY_WARNING


def test_rate_of_change_over_horizon():
    d = ChannelDetector(window_bits=6, rate_limit=300, rate_horizon=30)
    ramp_ok = [i * 9 for i in range(60)]  # 270 counts per 30 samples
    assert feed(d, ramp_ok) & det.FLAG_RATE == 0
    d.reset()
    fast = [i * 11 for i in range(60)]  # 330 counts per 30 samples
    assert feed(d, fast) & det.FLAG_RATE


def test_rate_horizon_longer_than_window_grows_the_ring():
    d = ChannelDetector(window_bits=3, rate_limit=10, rate_horizon=40)
    assert len(d.ring) == 64 and d.mask == 63
    assert feed(d, [i for i in range(41)]) & det.FLAG_RATE


def test_sensor_faults():
    d = ChannelDetector(window_bits=3, physical_low=-1000, physical_high=1000)
    assert d.update(0, det.INPUT_MISSING) & det.FLAG_FAULT
    d.reset()
    assert d.update(0, det.INPUT_RAIL) & det.FLAG_FAULT
    d.reset()
    assert d.update(1001) & det.FLAG_FAULT
    assert d.filled == 0, "a faulty sample must not enter the statistics"
    assert d.level == det.SEVERITY_CRITICAL


def test_stuck_sensor_has_no_variance():
    d = ChannelDetector(window_bits=4)
    feed(d, noise(16))
    assert d.update(7) & det.FLAG_STUCK == 0
    assert feed(d, [7] * 17) & det.FLAG_STUCK


def test_bad_parameters_are_rejected():
    for kwargs in ({"window_bits": 7}, {"rate_horizon": 256}, {"consecutive": 0}, {"clear_after": 10001}, {"physical_low": 5, "physical_high": 5}):
        try:
            ChannelDetector(**kwargs)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (kwargs,))


def _steady(d, values, n):
    for i in range(n):
        d.update(values[i & 63])


def test_sample_path_allocates_nothing():
    d = ChannelDetector(window_bits=5, rate_limit=500, rate_horizon=10, consecutive=2)
    values = noise(64, amplitude=300)
    for i in range(64):
        values[i] += (i // 32) * 900  # a level step inside the loop: re-anchoring included
    _steady(d, values, 200)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        _steady(d, values, 2000)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used == 0, used
    assert d.reanchors > 0


def test_isqrt_exact():
    for n in (0, 1, 2, 3, 4, 15, 16, 17, 1 << 20, (1 << 28) - 1, 1 << 28):
        for guess in (0, 1, 7, 1 << 14):
            r = det.isqrt(n, guess)
            assert r * r <= n < (r + 1) * (r + 1), (n, guess, r)
