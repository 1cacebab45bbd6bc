"""Pure Python: no I/O, no Quart."""
