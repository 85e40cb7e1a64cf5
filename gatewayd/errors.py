"""The base of every error gatewayd raises on purpose: a caller that runs the daemon's parts
(the CLI, a test harness) can tell them from a bug with one `except GatewayError`."""


class GatewayError(Exception):
    pass
