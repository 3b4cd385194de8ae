"""Helpers for sendguard's tests: real servers on loopback, a real sendguard process."""
