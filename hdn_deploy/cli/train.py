"""`hdn-deploy train` (placeholder while being written)."""
