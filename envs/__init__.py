"""Offline data and environments: device datasets and replay buffers, the OGBench and Robomimic suites, worker
processes and videos. Imports only `core`."""
