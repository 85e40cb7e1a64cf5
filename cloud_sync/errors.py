"""The base of every error the cloud agent and the reference endpoint raise on purpose."""


class CloudSyncError(Exception):
    pass
