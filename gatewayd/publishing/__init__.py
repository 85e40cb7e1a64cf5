"""Publishing: MQTT out (telemetry, summaries, alerts, health, Home Assistant discovery, a backlog
while the broker is away) and operators' commands in (sized, authorised, validated)."""
