# Booted by MicroPython on the ESP32; the application itself is compiled (app.mpy).
import app

app.run()
