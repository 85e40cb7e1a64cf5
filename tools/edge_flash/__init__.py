"""edge-flash: building, flashing and provisioning the ESP32 nodes."""
