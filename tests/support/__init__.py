"""Helpers the integration, fault and benchmark suites share: real processes on free ports."""
