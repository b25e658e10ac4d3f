"""Benchmarks (not tests): `make bench` runs them; results go to bench/results/."""
