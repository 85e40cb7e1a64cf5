"""gatewayd: the fog tier of the edge gateway (Modbus acquisition, store, models, alerts)."""

__version__ = "0.1.0"
