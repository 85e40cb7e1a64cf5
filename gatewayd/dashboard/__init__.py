"""The gateway's web dashboard (docs/dashboard.md): served by the daemon itself, from its
asyncio loop, when `[dashboard] enabled = true`.

- `server.py`: the HTTP server (microdot), its routes and the limits it enforces;
- `access.py`: who may use it (token, session cookie, host and origin checks);
- `views.py`: what the pages are shown, from the running gateway and the store;
- `spans.py`: which span a chart shows (fitted to the data unless chosen) and whether from raw
  readings or minute summaries;
- `envelope.py`: long series cut down to what a chart can draw;
- `minute_points.py`: one-minute summaries merged into a chart's points;
- `gaps.py`: gaps in the data drawn as gaps;
- `running.py`: what it reads of the running daemon (a protocol the daemon's gateway meets);
- `static/`: the page, its script and style, and the vendored chart library (uPlot, MIT).
"""
