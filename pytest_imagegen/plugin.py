"""pytest glue for pytest-imagegen (options, fixtures, hooks)."""
