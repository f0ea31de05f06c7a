"""Hooks for acquisition software (each imports nothing of that software)."""
