# Local safety action. A critical detection drives the configured outputs to their safe,
# de-energised state in the same sample cycle and latches the trip in flash, so it survives
# a reboot. Only the node's own reset path (the reset pin, or the reset code over Modbus)
# clears the latch, and a reset only permits a restart: outputs come back when the node is
# healthy again, never as a side effect of the reset itself.
import json

from micropython import const

NO_CAUSE = const(0xFFFF)
LATCH_FILE = "trip.json"


class SafetyLatch:
    def __init__(self, outputs, flash):
        """`outputs`: objects with set(energised); `flash`: read(name) -> str or None and
        write(name, text) that replaces the file atomically."""
        self.outputs = outputs
        self.flash = flash
        self.latched = 0  # bit mask of tripped outputs
        self.cause = NO_CAUSE  # channel << 8 | check of the first trip
        self.trips = 0
        self.energised = 0
        self.persist_errors = 0
        self._load()
        self.all_safe()

    def _load(self):
        text = self.flash.read(LATCH_FILE)
        if not text:
            return
        try:
            state = json.loads(text)
            self.latched = int(state["latched"])
            self.cause = int(state["cause"])
            self.trips = int(state.get("trips", 0))
        except (ValueError, KeyError, TypeError):
            # Unreadable latch: fail safe, every output tripped until reset.
            self.latched = (1 << len(self.outputs)) - 1
            self.cause = NO_CAUSE

    def _save(self):
        try:
            self.flash.write(LATCH_FILE, json.dumps({"latched": self.latched, "cause": self.cause, "trips": self.trips}))
        except OSError:
            self.persist_errors += 1

    def all_safe(self):
        for out in self.outputs:
            out.set(False)
        self.energised = 0

    def trip(self, mask, cause):
        """De-energise `mask` at once, then record the latch."""
        outputs = self.outputs
        for i in range(len(outputs)):
            if mask & (1 << i):
                outputs[i].set(False)
        self.energised &= ~mask
        if mask & ~self.latched:
            if not self.latched:
                self.cause = cause
            self.latched |= mask
            self.trips += 1
            self._save()

    def reset(self):
        """Clear the latch (the caller has checked the reset path). Outputs stay safe."""
        if self.latched:
            self.latched = 0
            self.cause = NO_CAUSE
            self._save()

    def permit(self, healthy):
        """Energise the outputs that are not latched when the node is healthy; otherwise
        hold every output safe."""
        if not healthy:
            if self.energised:
                self.all_safe()
            return
        outputs = self.outputs
        for i in range(len(outputs)):
            bit = 1 << i
            if not self.latched & bit and not self.energised & bit:
                outputs[i].set(True)
                self.energised |= bit
