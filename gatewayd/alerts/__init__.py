"""Alerts: the one alert type and id scheme, the alerts of the nodes' own checks, and operators'
feedback on alerts (acknowledge, label, report a missed anomaly) as one command path for the
CLI, MQTT and the dashboard."""
