"""`onboard ui`: the astronaut's compose page, served on loopback by this laptop.

It is a thin layer over the functions the CLI uses (onboard.compose for rules and signing,
onboard.queue, onboard.receipts, onboard.keystore): no second copy of the platform rules,
of the queue or of signing lives here. It never talks to ground: everything it shows comes
from the laptop's queue and the receipts already received, so it adds no bytes to the link.

Modules: ``server`` (start-up, loopback check), ``security`` (session secret, CSRF, Host
check), ``keyring`` (unlocked keys, forgotten after inactivity), ``drafts`` (drafts and
staged photos on disk), ``views`` (what the page shows, as JSON), ``routes`` (the HTTP API).
"""
