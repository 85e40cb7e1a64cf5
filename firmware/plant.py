# Simulated plant for virtual nodes: a centrifugal pump loop with motor current,
# outlet pressure, flow and fluid temperature. First-order dynamics plus Gaussian
# sensor noise, and a speed setpoint that moves in steps like an operator would.
import math
import random

CHANNELS = (
    ("pressure", "bar"),
    ("flow", "m3/h"),
    ("temperature", "C"),
    ("current", "A"),
)

_TWO_PI = 2 * math.pi


class PumpPlant:
    def __init__(self, seed=1, dt_s=0.1, ambient_c=20.0):
        random.seed(seed)
        self.dt = dt_s
        self.ambient = ambient_c + 4.0 * random.random()
        self.time_s = 0.0
        self.setpoint = 0.6 + 0.4 * random.random()  # fraction of rated speed
        self.speed = self.setpoint
        self.valve = 0.75 + 0.2 * random.random()  # fraction open
        self.temperature = self.ambient + 18.0 * self.speed**3  # start at thermal equilibrium
        self.next_change_s = self._hold_time()
        self.values = [0.0] * len(CHANNELS)
        self.update()

    def _hold_time(self):
        return 20.0 + 40.0 * random.random()

    def _noise(self, sigma):
        # Box-Muller; u1 is kept away from 0 so log() is finite.
        u1 = 1.0 - random.random()
        return sigma * math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * random.random())

    def update(self):
        dt = self.dt
        self.time_s += dt
        if self.time_s >= self.next_change_s:
            self.setpoint = 0.6 + 0.4 * random.random()
            self.next_change_s = self.time_s + self._hold_time()
        self.speed += (self.setpoint - self.speed) * dt / 3.0  # motor and controller lag, 3 s
        s = self.speed
        flow = 32.0 * s * self.valve
        pressure = 6.0 * s * s - 0.0025 * flow * flow
        current = 2.0 + 9.0 * s * s * s
        # Fluid heats with shaft power and cools to ambient, time constant 2 minutes.
        target = self.ambient + 18.0 * s * s * s
        self.temperature += (target - self.temperature) * dt / 120.0
        values = self.values
        values[0] = pressure + self._noise(0.03)
        values[1] = flow + self._noise(0.25)
        values[2] = self.temperature + self._noise(0.05)
        values[3] = current + self._noise(0.04)

    def value(self, index):
        return self.values[index]
