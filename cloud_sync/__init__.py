"""cloud_sync: the gateway's agent for the cloud tier and the reference endpoint it talks to."""

__version__ = "0.1.0"
