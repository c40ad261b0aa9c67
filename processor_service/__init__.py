"""Processor service: outbox relay and the payout command consumer."""
