"""The base of every error edge-flash raises on purpose (its CLI prints them without a traceback)."""


class EdgeFlashError(Exception):
    pass
