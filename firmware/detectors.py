# Per-channel detectors that run on every sample: hard bounds, Z-score over a ring buffer,
# rate of change over a horizon, sensor faults, hysteresis and severities.
#
# Everything is integer arithmetic on "counts" (value = counts * 2**-k, k per channel), with
# every intermediate kept inside MicroPython's small-int range (+-2**30 on the ESP32), so the
# sample path allocates nothing: on the ESP32 every float result is a 16-byte heap object and
# the collector would then pause the loop for milliseconds. Integer sums are also exact, so
# the running mean and variance cannot drift however long the node runs.
#
# This module also imports under CPython (host-side reference tests, NAB evaluation).
import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # same behaviour, plainer signature
        return x


# Check indices; each has a flag bit (1 << index), a severity and a hysteresis counter.
CHECK_FAULT = const(0)  # NaN / no reading, outside the physical range, ADC at a rail
CHECK_STUCK = const(1)  # no variance over a full window
CHECK_LOW = const(2)
CHECK_HIGH = const(3)
CHECK_ZSCORE = const(4)
CHECK_RATE = const(5)
CHECKS = const(6)

FLAG_FAULT = const(1)
FLAG_STUCK = const(2)
FLAG_LOW = const(4)
FLAG_HIGH = const(8)
FLAG_ZSCORE = const(16)
FLAG_RATE = const(32)

SEVERITY_OFF = const(0)
SEVERITY_WARNING = const(1)
SEVERITY_CRITICAL = const(2)

# Inputs a sample source reports alongside the counts.
INPUT_OK = const(0)
INPUT_MISSING = const(1)  # NaN, read error, driver returned nothing
INPUT_RAIL = const(2)  # ADC pinned at 0 or full scale: open or shorted wire

Z_ONE = const(16)  # Z-scores are fixed point, 1/16 per unit
MAX_WINDOW_BITS = const(6)  # window of at most 64 samples
MAX_HORIZON = const(255)  # rate-of-change horizon in samples (ring of up to 256 counts)
DEV_CLAMP = const(1023)  # squared deviations use |q - ref| <= 1023 counts
REANCHOR = const(256)  # re-centre when the mean moves this many counts from the reference
MAX_COUNTS = const(1 << 20)
MAX_CLEAR_AFTER = const(10000)  # misses before a check clears (hits are 16-bit counters)
Z_CLAMP = const(32767)


def isqrt(n, guess):
    """Integer square root by Newton's method from a guess (the previous result), so the
    steady state converges in one or two steps; small ints only."""
    if n <= 0:
        return 0
    x = guess if guess > 0 else n
    while True:
        y = (x + n // x) >> 1
        if y >= x:
            # Newton from above stops at floor(sqrt(n)); from below it may overshoot by one.
            while x * x > n:
                x -= 1
            while (x + 1) * (x + 1) <= n:
                x += 1
            return x
        x = y


class ChannelDetector:
    """Checks for one channel. Thresholds are in counts (see `counts`), the Z limit in
    1/16 units, severities per check in SEVERITY_* (a check whose severity is off never
    fires); hysteresis: a check turns on after `consecutive` hits in a row and off after
    `clear_after` misses in a row (default: as many as `consecutive`)."""

    def __init__(
        self,
        window_bits=5,
        z_limit=48,
        rate_limit=0,
        rate_horizon=0,
        low=-MAX_COUNTS,
        high=MAX_COUNTS,
        physical_low=-MAX_COUNTS,
        physical_high=MAX_COUNTS,
        consecutive=1,
        severities=None,
        clear_after=0,
    ):
        if not 3 <= window_bits <= MAX_WINDOW_BITS:
            raise ValueError("window must be 8..64 samples (a power of two)")
        if not 0 <= rate_horizon <= MAX_HORIZON:
            raise ValueError("rate horizon must be 0..255 samples")
        if not -MAX_COUNTS <= physical_low < physical_high <= MAX_COUNTS:
            raise ValueError("physical range must lie within +-2**20 counts")
        if not 1 <= consecutive <= 1000:
            raise ValueError("consecutive must be 1..1000")
        if not clear_after:
            clear_after = consecutive
        if not 1 <= clear_after <= MAX_CLEAR_AFTER:
            raise ValueError("clear_after must be 1..10000")
        self.window_bits = window_bits
        self.window = 1 << window_bits
        size = self.window
        while size <= rate_horizon:
            size <<= 1
        self.mask = size - 1  # the ring holds mask + 1 counts, a power of two
        # Built from a range, which the array reads without a temporary list; reset() zeroes it.
        self.ring = array.array("i", range(size))
        self.z_limit = z_limit
        self.rate_limit = rate_limit
        self.rate_horizon = rate_horizon
        self.low = low
        self.high = high
        self.physical_low = physical_low
        self.physical_high = physical_high
        self.consecutive = consecutive
        self.clear_after = clear_after
        self.severity = bytearray(CHECKS)
        if severities is None:
            severities = (SEVERITY_CRITICAL, SEVERITY_WARNING, SEVERITY_CRITICAL, SEVERITY_CRITICAL,
                          SEVERITY_WARNING, SEVERITY_WARNING)
        self.enabled = 0  # flag bits of the checks whose severity is not off
        for i in range(CHECKS):
            self.severity[i] = severities[i]
            if severities[i] != SEVERITY_OFF:
                self.enabled |= 1 << i
        self.hits = array.array("h", range(CHECKS))
        self.reset()

    def reset(self):
        """Forget the history (after a reconfiguration or a sensor swap)."""
        for i in range(self.mask + 1):
            self.ring[i] = 0
        for i in range(CHECKS):
            self.hits[i] = 0
        self.head = 0  # next slot to write
        self.filled = 0  # valid samples in the ring, up to size
        self.ref = 0  # reference for the squared deviations
        self.sum = 0  # sum of the last `window` samples
        self.sum_sq = 0  # sum of min(|q - ref|, DEV_CLAMP)**2 over the same samples
        self.std16 = 0
        self.mean16 = 0
        self.z16 = 0
        self.raw = 0  # checks that fired this sample, before hysteresis
        self.active = 0  # checks on after hysteresis
        self.level = SEVERITY_OFF
        self.settled = False
        self.reanchors = 0

    def update(self, q, status=INPUT_OK):
        """Run every check on one sample `q` (counts); return the active flags."""
        # One method, attributes read once into locals: this runs for every channel on
        # every sample, and each call and attribute lookup costs bytecode time.
        raw = 0
        if status == INPUT_MISSING or status == INPUT_RAIL or q < self.physical_low or q > self.physical_high:
            raw = FLAG_FAULT
        else:
            window = self.window
            filled = self.filled
            ring = self.ring
            head = self.head
            mask = self.mask
            full = filled >= window
            # Z-score of the new sample against the window before it.
            if full:
                dev16 = (q << 4) - self.mean16
                std16 = self.std16
                if std16 == 0:
                    raw = FLAG_STUCK
                    self.z16 = 0
                else:
                    z = (dev16 << 4) // std16 if -(1 << 25) < dev16 < (1 << 25) else Z_CLAMP
                    if z > Z_CLAMP:
                        z = Z_CLAMP
                    elif z < -Z_CLAMP:
                        z = -Z_CLAMP
                    self.z16 = z
                    if z > self.z_limit or -z > self.z_limit:
                        raw = FLAG_ZSCORE
            horizon = self.rate_horizon
            if horizon and filled >= horizon:
                change = q - ring[(head - horizon) & mask]
                if change > self.rate_limit or -change > self.rate_limit:
                    raw |= FLAG_RATE
            if q < self.low:
                raw |= FLAG_LOW
            elif q > self.high:
                raw |= FLAG_HIGH
            # Push q into the window's exact sums.
            ref = self.ref
            total = self.sum + q
            sum_sq = self.sum_sq
            if full:
                old = ring[(head - window) & mask]
                total -= old
                d = old - ref
                if d > DEV_CLAMP:
                    d = DEV_CLAMP
                elif d < -DEV_CLAMP:
                    d = -DEV_CLAMP
                sum_sq -= d * d
            ring[head] = q
            self.head = (head + 1) & mask
            if filled <= mask:
                filled += 1
                self.filled = filled
            d = q - ref
            if d > DEV_CLAMP:
                d = DEV_CLAMP
            elif d < -DEV_CLAMP:
                d = -DEV_CLAMP
            sum_sq += d * d
            self.sum = total
            self.sum_sq = sum_sq
            n = filled if filled < window else window
            # Deviation of the window's sum from n * ref, split so no product leaves small ints.
            excess = total - n * ref
            if excess > n * REANCHOR or -excess > n * REANCHOR:
                self._reanchor(n)
                ref = self.ref
                sum_sq = self.sum_sq
                excess = total - n * ref
            if n == window:
                bits = self.window_bits
                mean_dev = excess >> bits  # floor
                rest = excess - (mean_dev << bits)
                # sum of squares about the mean = sum_sq - excess**2 / n, without forming excess**2
                ss = sum_sq - mean_dev * ((mean_dev << bits) + 2 * rest) - ((rest * rest) >> bits)
                if ss < 0:
                    var256 = 0
                elif ss < (1 << 22):
                    var256 = (ss << 8) >> bits  # full precision for quiet signals
                else:
                    var256 = (ss >> bits) << 8  # keeps var256 under 2**28
                s = self.std16
                if s * s > var256 or (s + 1) * (s + 1) <= var256:  # else the last root still holds
                    self.std16 = isqrt(var256, s)
                self.mean16 = (ref << 4) + (mean_dev << 4) + ((rest << 4) >> bits)
        if raw:
            raw &= self.enabled
        self.raw = raw
        if raw == 0 and self.settled:
            return 0  # steady normal state: every counter already at its floor
        return self._hysteresis(raw)

    def _reanchor(self, n):
        # The level moved far from the reference: recompute the squared sum about the current
        # mean, O(window), rare (a step change of the process, or warm-up).
        ref = self.sum // n
        total = 0
        ring = self.ring
        head = self.head
        mask = self.mask
        i = n
        while i > 0:
            d = ring[(head - i) & mask] - ref
            i -= 1
            if d > DEV_CLAMP:
                d = DEV_CLAMP
            elif d < -DEV_CLAMP:
                d = -DEV_CLAMP
            total += d * d
        self.ref = ref
        self.sum_sq = total
        self.reanchors += 1

    def _hysteresis(self, raw):
        hits = self.hits
        need = self.consecutive
        clear = self.clear_after
        active = self.active
        level = SEVERITY_OFF
        for i in range(CHECKS):
            bit = 1 << i
            h = hits[i]
            if raw & bit:
                h = h + 1 if h >= 0 else 1
                if h >= need:
                    active |= bit
            else:
                h = h - 1 if h <= 0 else -1
                if -h >= clear:
                    active &= ~bit
            if h > need:
                h = need
            elif h < -clear:
                h = -clear
            hits[i] = h
            if active & bit and self.severity[i] > level:
                level = self.severity[i]
        self.active = active
        self.level = level
        if raw == 0 and active == 0:
            settled = True
            for i in range(CHECKS):
                if hits[i] != -clear:
                    settled = False
            self.settled = settled
        else:
            self.settled = False
        return active
