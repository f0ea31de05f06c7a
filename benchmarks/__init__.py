"""Benchmark scripts of hdn-deploy (not installed; run from a source checkout)."""
