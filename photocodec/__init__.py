"""The photo transport codec (lossless JPEG <-> JPEG XL), shared by onboard's encoder and
ground's bounded decoder child (docs/PROTOCOL.md §10)."""
