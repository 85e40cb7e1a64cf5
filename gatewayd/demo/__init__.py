"""The demo: virtual nodes (the firmware in the MicroPython unix port with a simulated plant) and
`gatewayd demo`, which runs the daemon against them."""
