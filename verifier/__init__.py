"""orbitpost-verify and the log witness: checks anyone can run on a post's public proof.

Imports protocol/ only (never ground/ or onboard/): a reader needs no part of ground's code
to check what ground publishes (docs/TRANSPARENCY.md).
"""
