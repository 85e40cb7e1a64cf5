"""Built-in device profiles: register layouts of devices gatewayd knows by name."""
