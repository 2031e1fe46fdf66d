"""Helpers shared by the dashboard's API and browser tests (not fixtures: plain functions)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ground import operators
from ground.dashboard import setup
from ground.dashboard.auth import LoginLimiter
from ground.enroll import enroll
from ground.home import GroundHome
from protocol import SigningKey, format_public_key

ADMIN = ("ada", "admin password 1")
READER = ("rita", "reader password 1")


def make_home(root: Path, alice_key: SigningKey) -> GroundHome:
    """A ground home with alice enrolled for archive:alice and two operators (admin, read-only)."""
    home = GroundHome(root)
    enroll(home.conn, "alice", format_public_key(alice_key.public_key), ["archive:alice"], 1_000)
    operators.add_operator(home.conn, ADMIN[0], ADMIN[1], operators.Role.ADMIN, 1_000)
    operators.add_operator(home.conn, READER[0], READER[1], operators.Role.READ_ONLY, 1_000)
    return home


def make_app(home: GroundHome, limiter: LoginLimiter | None = None) -> web.Application:
    """An application with only the dashboard on it, as `ground serve` would register it."""
    app = web.Application()
    setup(app, home, limiter=limiter)
    return app
