"""``make bench``: gateway overhead against the direct path and a null proxy (see run.py)."""
