"""Onboard's exception hierarchy; every message tells the astronaut what to do next.

OnboardError
├── IdentityError   missing/duplicate key, bad key file
├── PostRejected    a post that cannot be queued as given
└── QueueError      an id that is not in the queue, a state that forbids the action
"""


class OnboardError(Exception):
    """Base of onboard errors; the CLI prints the message and exits 1."""


class IdentityError(OnboardError):
    pass


class PostRejected(OnboardError):
    pass


class QueueError(OnboardError):
    pass
