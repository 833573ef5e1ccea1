"""Blob storage: a small driver protocol and the drivers that implement it."""

from dockyard.storage.protocol import ObjectWriter, StorageBusy, StorageDriver, StorageError, open_driver

__all__ = ["ObjectWriter", "StorageBusy", "StorageDriver", "StorageError", "open_driver"]
