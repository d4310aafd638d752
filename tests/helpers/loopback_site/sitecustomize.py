"""Imported by Python at start-up when this directory is on PYTHONPATH (the e2e tier's local stack)."""

import loopback_guard

loopback_guard.install()
