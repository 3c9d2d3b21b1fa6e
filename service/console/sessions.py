"""Console sessions: a random id in a signed cookie, everything else in Redis.

The cookie carries only the session id, signed with QGW_CONSOLE_SECRET (unset: a key
generated once and kept in Redis, so `api --workers N` and replicas agree); Redis keeps what
the session is (a team key's hash, or that the admin token signed in, by its hash), its
CSRF token and the actor named in the audit trail, under the SHA-256 of the id, expiring
after QGW_CONSOLE_IDLE_MINUTES without a request. The key or token itself is stored
nowhere: each page checks the hash again, so a revoked key or a changed admin token ends
the session at its next request. Redis is shared by every replica, so a session spans
them.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import asdict, dataclass

import orjson
from itsdangerous import BadSignature, Signer
from redis.asyncio import Redis

from service.config import Settings

logger = logging.getLogger(__name__)

COOKIE = "qgw_console"
COOKIE_PATH = "/console"


@dataclass(frozen=True)
class SessionData:
    """What a session is: a team key's hash (hex), or the admin token's (admin)."""

    csrf: str
    key_hash: str | None = None
    admin_hash: str | None = None
    actor: str | None = None

    @property
    def admin(self) -> bool:
        return self.admin_hash is not None


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def configured_secret(settings: Settings) -> str | None:
    """QGW_CONSOLE_SECRET, or None (with a warning) when it is not set."""
    secret = settings.console_secret.get_secret_value()
    if secret:
        return secret
    logger.warning(
        "QGW_CONSOLE_SECRET is not set: console sessions are signed with a key generated "
        "once and kept in Redis beside them, so every process and replica of this "
        "deployment shares it; sessions end if Redis loses it"
    )
    return None


async def shared_secret(redis: Redis, prefix: str) -> str:
    """The generated signing key: the first process to ask makes it, every other reads it
    (a key of each process's own would refuse the cookies of the others). Read on every
    request, not kept: after a Redis flush all processes agree on the next one."""
    key = f"{prefix}:console-secret"
    value = await redis.get(key)
    if value is None:
        await redis.set(key, secrets.token_urlsafe(32), nx=True)
        value = await redis.get(key)
    assert value is not None
    return value.decode() if isinstance(value, bytes) else str(value)


class SessionStore:
    def __init__(self, redis: Redis, *, prefix: str, secret: str, idle_seconds: int) -> None:
        self.redis = redis  # arq's pool: the process's one Redis connection pool
        self.prefix = prefix
        self.signer = Signer(secret, salt="qgw-console-session")
        self.idle_seconds = idle_seconds

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:{hashlib.sha256(session_id.encode()).hexdigest()}"

    async def create(self, data: SessionData) -> str:
        """A new session; the signed cookie value that names it."""
        session_id = secrets.token_urlsafe(32)
        await self.redis.set(
            self._key(session_id), orjson.dumps(asdict(data)), ex=self.idle_seconds
        )
        return self.signer.sign(session_id).decode()

    async def load(self, cookie: str | None) -> tuple[str, SessionData] | None:
        """The session the cookie names, its idle time restarted; None if unsigned, unknown
        or expired."""
        if not cookie:
            return None
        try:
            session_id = self.signer.unsign(cookie).decode()
        except BadSignature:
            return None
        raw = await self.redis.getex(self._key(session_id), ex=self.idle_seconds)
        if raw is None:
            return None
        return session_id, SessionData(**orjson.loads(raw))

    async def end(self, session_id: str) -> None:
        await self.redis.delete(self._key(session_id))
