"""Accuracy evaluate module (see accuracy.py); a package so it installs with `training`."""
