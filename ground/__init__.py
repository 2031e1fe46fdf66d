"""orbitpost's ground service: verify, store and publish what the crew signed."""
