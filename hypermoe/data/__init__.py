"""Benchmark data: readers of the official files, task definitions, metrics, DataModules."""
