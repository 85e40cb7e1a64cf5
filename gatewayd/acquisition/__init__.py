"""Acquisition: reading devices. One poller per device on its schedule over a Modbus link (TCP, or
RTU on a shared bus), the register decoding of generic devices and the profiles of known ones
(the edge node)."""
