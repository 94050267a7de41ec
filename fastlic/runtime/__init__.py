"""Deployment runtime: bitstream format, encoder and decoder pipelines."""
