"""Whole runs through the real kubernetes client over real HTTP against the fake API
server (and deliberately broken servers)."""
