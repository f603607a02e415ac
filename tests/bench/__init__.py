"""Measurements that need the whole pipeline running: not tests, run by hand."""
