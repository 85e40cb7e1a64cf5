"""The `gatewayd` command line: one module per command group."""
