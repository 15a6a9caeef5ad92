"""The test suite; helpers (fault proxy, service processes) live beside conftest.py."""
