"""Retrieval evaluate module (see retrieval.py); a package so it installs with `training`."""
