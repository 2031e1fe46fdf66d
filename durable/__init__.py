"""What onboard and ground both need to keep data through crashes: atomic file writes, the
content-addressed blob store and SQLite opened with full durability.

Both sides import this package; neither imports the other (tests/test_layering.py).
"""
