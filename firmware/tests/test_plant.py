import plant

_N = len(plant.CHANNELS)


class Stats:
    """Streaming min, max, mean and variance, so the test fits in an ESP32-sized heap."""

    def __init__(self):
        self.n = 0
        self.mean = [0.0] * _N
        self.m2 = [0.0] * _N
        self.low = [1e9] * _N
        self.high = [-1e9] * _N

    def add(self, p):
        self.n += 1
        for i in range(_N):
            v = p.value(i)
            d = v - self.mean[i]
            self.mean[i] += d / self.n
            self.m2[i] += d * (v - self.mean[i])
            self.low[i] = min(self.low[i], v)
            self.high[i] = max(self.high[i], v)


def run(seed, n, dt_s=0.1):
    p = plant.PumpPlant(seed=seed, dt_s=dt_s)
    stats = Stats()
    for _ in range(n):
        p.update()
        stats.add(p)
    return stats


def test_values_stay_in_physical_ranges():
    stats = run(3, 3000)
    lows = (0.5, 10.0, 15.0, 2.0)
    highs = (7.0, 35.0, 45.0, 12.0)
    for i in range(_N):
        assert lows[i] < stats.low[i] and stats.high[i] < highs[i], (plant.CHANNELS[i][0], stats.low[i], stats.high[i])


def test_signals_are_noisy_not_constant():
    stats = run(3, 200)
    for i in range(_N):
        assert stats.m2[i] / stats.n > 1e-5, plant.CHANNELS[i][0]


def test_same_seed_same_series_other_seed_differs():
    a, b, c = run(5, 50), run(5, 50), run(6, 50)
    assert a.mean == b.mean and a.m2 == b.m2
    assert a.mean != c.mean


def test_setpoint_changes_move_the_process():
    p = plant.PumpPlant(seed=2, dt_s=0.5)
    changes = 0
    last = p.setpoint
    for _ in range(2000):  # 1000 s: several setpoint changes
        p.update()
        if p.setpoint != last:
            changes += 1
            last = p.setpoint
    assert changes >= 5, changes
