# The node's sample cycle: read every channel once per period and publish it in the
# register bank. The same code runs on the ESP32 and in the unix port.
import time

import regmap
from regmap import (
    CH_VALUE,
    IR_CHANNEL_COUNT,
    IR_FW_VERSION,
    IR_MAGIC,
    IR_MAP_VERSION,
    IR_NODE_ID,
    IR_NODE_STATUS,
    IR_OVERRUNS,
    IR_SAMPLE_COUNT,
    IR_SAMPLE_PERIOD_MS,
    IR_UPTIME_S,
    DESC_NAME,
    DESC_NAME_REGS,
    DESC_UNIT,
    DESC_UNIT_REGS,
    STATUS_RUNNING,
)


class Node:
    """`source` has update() (one call per cycle) and value(index); `channels` is a
    sequence of (name, unit) in register order."""

    def __init__(self, node_id, channels, source, bank, period_ms=100):
        if len(channels) > regmap.MAX_CHANNELS:
            raise ValueError("at most %d channels" % regmap.MAX_CHANNELS)
        self.node_id = node_id
        self.channels = channels
        self.source = source
        self.bank = bank
        self.period_ms = period_ms
        self.samples = 0
        self.overruns = 0
        self.started_ms = time.ticks_ms()
        self.next_due_ms = self.started_ms
        self._describe()

    def _describe(self):
        bank = self.bank
        bank.set_u16(IR_MAGIC, regmap.MAGIC)
        bank.set_u16(IR_MAP_VERSION, regmap.MAP_VERSION)
        bank.set_u16(IR_FW_VERSION, regmap.FW_VERSION)
        bank.set_u16(IR_NODE_ID, self.node_id)
        bank.set_u16(IR_CHANNEL_COUNT, len(self.channels))
        bank.set_u16(IR_SAMPLE_PERIOD_MS, self.period_ms)
        bank.set_u16(IR_NODE_STATUS, STATUS_RUNNING)
        for i, (name, unit) in enumerate(self.channels):
            bank.set_text(regmap.descriptor_address(i, DESC_NAME), name, DESC_NAME_REGS)
            bank.set_text(regmap.descriptor_address(i, DESC_UNIT), unit, DESC_UNIT_REGS)

    def sample(self, now_ms):
        self.source.update()
        bank = self.bank
        for i in range(len(self.channels)):
            bank.set_f32(regmap.channel_address(i, CH_VALUE), self.source.value(i))
        self.samples += 1
        bank.set_u32(IR_SAMPLE_COUNT, self.samples)
        bank.set_u32(IR_UPTIME_S, time.ticks_diff(now_ms, self.started_ms) // 1000)

    def due_in_ms(self, now_ms):
        return time.ticks_diff(self.next_due_ms, now_ms)

    def step(self, now_ms):
        """Sample if the period has elapsed. A late cycle is counted and the schedule
        restarts from now rather than bursting to catch up."""
        if self.due_in_ms(now_ms) > 0:
            return False
        self.sample(now_ms)
        self.next_due_ms = time.ticks_add(self.next_due_ms, self.period_ms)
        if time.ticks_diff(self.next_due_ms, now_ms) <= 0:
            self.overruns += 1
            self.bank.set_u16(IR_OVERRUNS, self.overruns)
            self.next_due_ms = time.ticks_add(now_ms, self.period_ms)
        return True

    def run(self, server, should_stop=None):
        while should_stop is None or not should_stop():
            now = time.ticks_ms()
            self.step(now)
            wait = self.due_in_ms(time.ticks_ms())
            server.poll(wait if wait > 0 else 0)
