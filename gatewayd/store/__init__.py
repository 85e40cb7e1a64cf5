"""The store: everything gatewayd keeps on disk, and the only code that speaks SQL to it. The
database (compressed reading blocks, minute summaries, alerts, labels, the outbox for the cloud,
the MQTT backlog), its migrations, the worker thread every daemon call goes through with its
fault handling and disk budget, the writer that batches readings into it, and the export to CSV."""
