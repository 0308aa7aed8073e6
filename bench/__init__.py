"""Benchmarks run by `make bench`; they print figures and the command that made them."""
