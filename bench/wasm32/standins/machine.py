# A stand-in for the ESP32's machine module, which MicroPython's WebAssembly port lacks:
# enough for the node's ESP32 hardware layer (hal_esp32) to start and sample ADC channels in
# bench/firmware_heap32.py. On the ESP32, pins, ADCs and the watchdog are static objects
# that take no heap; here they are made once, as this module is imported into the bench's
# baseline, and handed out again. An ADC reads mid-scale with a little noise, so the node
# warms up and energises its outputs; reading allocates nothing.
PINS = 49


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1

    def __new__(cls, id, mode=-1, pull=-1, value=None):
        pin = _pins[id]
        if value is not None:
            pin.level = value
        return pin

    def value(self, level=None):
        if level is None:
            return self.level
        self.level = level


class ADC:
    ATTN_11DB = 3

    def __new__(cls, pin, atten=None):
        return _adcs[pin.id]

    def atten(self, atten):
        pass

    def read_u16(self):
        x = self.noise  # a 16-bit xorshift: small integers only
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        self.noise = x
        return (2048 + x % 101 - 50) << 4


class WDT:
    def __new__(cls, id=0, timeout=5000):
        return _wdt

    def feed(self):
        pass


def _made(cls, **attributes):
    obj = object.__new__(cls)
    for name, value in attributes.items():
        setattr(obj, name, value)
    return obj


_pins = [_made(Pin, id=i, level=1) for i in range(PINS)]
_adcs = [_made(ADC, noise=(i + 1) * 2654 & 0xFFFF) for i in range(PINS)]
_wdt = _made(WDT)
