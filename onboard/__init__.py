"""orbitpost's station-laptop client: queue, sign, bundle and send posts."""
