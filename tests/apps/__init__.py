"""ASGI apps that tests run in subprocesses (see tests/processes.py), importable as ``apps.*``."""
