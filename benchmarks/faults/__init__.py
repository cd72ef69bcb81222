"""Fault-injection scripts run against a live gateway (slow clients, ...)."""
