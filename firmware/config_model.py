# The node's validated configuration as plain objects (built by config.py at boot, which is
# then unloaded; these stay for the life of the node).
import detectors as det

# Config error codes, shown in input register CONFIG_ERROR.
ERR_NONE = 0
ERR_MISSING = 1
ERR_SYNTAX = 2
ERR_INVALID = 3


class Source:
    def __init__(self, kind, params):
        self.kind = kind  # "adc", "driver" or "sim"
        self.params = params


class ChannelConfig:
    def __init__(self):
        self.name = ""
        self.unit = ""
        self.k = 0
        self.scale = 1
        self.source = None
        self.physical = (0.0, 0.0)
        self.bounds = (0.0, 0.0)
        self.window_bits = 5
        self.z_threshold = 4.0
        self.z_tunable = (1.0, 4.0)
        self.rate_limit = 0.0
        self.rate_horizon = 0
        self.divider = 1  # sampled every `divider` node cycles
        self.consecutive = 1
        self.clear_after = 1
        self.severities = bytearray(det.CHECKS)
        self.trips = 0  # bit mask of outputs

    def counts(self, value):
        return int(value * self.scale + (0.5 if value >= 0 else -0.5))

    def detector(self):
        return det.ChannelDetector(
            window_bits=self.window_bits,
            z_limit=int(self.z_threshold * det.Z_ONE),
            rate_limit=self.counts(self.rate_limit) if self.rate_horizon else 0,
            rate_horizon=self.rate_horizon,
            low=self.counts(self.bounds[0]),
            high=self.counts(self.bounds[1]),
            physical_low=self.counts(self.physical[0]),
            physical_high=self.counts(self.physical[1]),
            consecutive=self.consecutive,
            clear_after=self.clear_after,
            severities=self.severities,
        )


class NodeConfig:
    def __init__(self):
        self.node_id = 1
        self.sample_period_ms = 100
        self.reset_code = 0
        self.reset_pin = None
        self.outputs = []  # (name, pin, active_high)
        self.channels = []
        self.tcp = None  # {"port": int} or None
        self.rtu = None  # dict or None
        self.wifi = None
        self.watchdog_ms = 0
