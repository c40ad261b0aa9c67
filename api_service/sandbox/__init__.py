"""Sandbox controls (test mode only): injected faults, webhook chaos, the readiness report."""
