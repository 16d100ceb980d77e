"""Stagecoach test suites (unit tests and the real-cluster harness)."""
