# Hardware layer for the ESP32: ADC channels, GPIO safety outputs, the flash file system,
# machine.WDT, a reset button, UART with an RS-485 direction pin, and Wi-Fi for Modbus TCP.
import time

import machine
from detectors import INPUT_MISSING, INPUT_OK, INPUT_RAIL
from flashfs import Flash


class Output:
    def __init__(self, name, pin, active_high=True):
        self.name = name
        self.active_high = active_high
        # Created already de-energised: the pin never glitches on at boot.
        self.pin = machine.Pin(pin, machine.Pin.OUT, value=0 if active_high else 1)
        self.energised = False

    def set(self, energised):
        self.pin.value(1 if energised == self.active_high else 0)
        self.energised = energised


class ResetInput:
    def __init__(self, pin):
        self.pin = machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP) if pin is not None else None

    def pressed(self):
        return self.pin is not None and self.pin.value() == 0  # button to ground


class AdcSampler:
    """ADC channels with linear calibration computed in integers: raw (12 bit) times a
    fixed-point gain, so a sample allocates nothing."""

    def __init__(self, channels):
        self.adcs: list = []
        self.status = bytearray(len(channels))
        self.gain = []
        self.offset = []
        self.raw_low = []
        self.fault_below = []
        self.fault_above = []
        self.drivers: list = []
        for ch in channels:
            src = ch.source
            if src.kind == "adc":
                p = src.params
                adc = machine.ADC(machine.Pin(p["pin"]))
                adc.atten(machine.ADC.ATTN_11DB)  # full 0..3.3 V range
                raw_low, raw_high = p["raw"]
                low, high = p["value"]
                # counts = count_low + (raw - raw_low) * gain >> 12, gain < 2**18
                gain = int((ch.counts(high) - ch.counts(low)) * 4096 / (raw_high - raw_low))
                if abs(gain) >= 1 << 18:
                    raise ValueError("%s: calibration gain too large for integer sampling" % ch.name)
                self.adcs.append(adc)
                self.gain.append(gain)
                self.offset.append(ch.counts(low))
                self.raw_low.append(int(raw_low))
                self.fault_below.append(p["fault_below"])
                self.fault_above.append(p["fault_above"])
                self.drivers.append(None)
            elif src.kind == "driver":
                module = __import__(src.params["driver"])
                self.adcs.append(None)
                self.gain.append(0)
                self.offset.append(0)
                self.raw_low.append(0)
                self.fault_below.append(-1)
                self.fault_above.append(4096)
                self.drivers.append(module.Driver(ch, src.params["options"]))
            else:
                raise ValueError("%s: source %s does not exist on the ESP32" % (ch.name, src.kind))

    def update(self):
        for d in self.drivers:
            if d is not None:
                d.update()

    def read(self, index):
        driver = self.drivers[index]
        if driver is not None:
            # A driver returns counts, or None when the sensor did not answer.
            q = driver.read()
            if q is None:
                self.status[index] = INPUT_MISSING
                return 0
            self.status[index] = INPUT_OK
            return q
        raw = self.adcs[index].read_u16() >> 4  # 12 significant bits on every ESP32 variant
        if raw <= self.fault_below[index] or raw >= self.fault_above[index]:
            self.status[index] = INPUT_RAIL
        else:
            self.status[index] = INPUT_OK
        return self.offset[index] + (((raw - self.raw_low[index]) * self.gain[index]) >> 12)


class UartPort:
    def __init__(self, rtu):
        self.uart = machine.UART(
            rtu["uart"], baudrate=rtu["baud"], bits=8,
            parity={"N": None, "E": 0, "O": 1}[rtu["parity"]], stop=rtu["stop_bits"],
            tx=rtu["tx"], rx=rtu["rx"], timeout=0, rxbuf=512,
        )
        self.stream = self.uart

    def readinto(self, view):
        return self.uart.readinto(view) or 0

    def write(self, data):
        self.uart.write(data)

    def flush(self):
        self.uart.flush()  # returns when the last bit has left the shift register


class Board:
    def __init__(self, reset_pin=None):
        self.flash = Flash("/")
        self.reset_input = ResetInput(reset_pin)
        self.wdt = None

    def outputs(self, specs):
        return [Output(name, pin, active_high) for name, pin, active_high in specs]

    def watchdog(self, timeout_ms):
        self.wdt = machine.WDT(timeout=timeout_ms)
        return self.wdt

    def sampler(self, channels, period_ms):
        return AdcSampler(channels)

    def connect_wifi(self, ssid, password, timeout_ms=15000):
        import network

        wlan = network.WLAN(network.STA_IF)
        wlan.active(True)
        if not wlan.isconnected():
            wlan.connect(ssid, password)
            start = time.ticks_ms()
            while not wlan.isconnected() and time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
                time.sleep_ms(100)
        return wlan.isconnected()

    def transports(self, slave, cfg):
        servers: list = []
        if cfg.tcp is not None:
            from modbus_tcp import ModbusTcpServer

            servers.append(ModbusTcpServer(slave, port=cfg.tcp["port"]))
        if cfg.rtu is not None:
            from modbus_rtu import ModbusRtuServer

            de = machine.Pin(cfg.rtu["de"], machine.Pin.OUT, value=0) if cfg.rtu["de"] is not None else None
            servers.append(ModbusRtuServer(slave, UartPort(cfg.rtu), baud=cfg.rtu["baud"], direction=de))
        return servers
