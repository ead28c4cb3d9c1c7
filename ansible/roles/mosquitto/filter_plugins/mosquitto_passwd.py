"""``mosquitto_passwd_hash``: a Mosquitto 2 password-file hash computed on the controller, so the role can
template the password file and stay idempotent.

Mosquitto 2 stores ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`` (12-byte salt, 64-byte hash;
``mosquitto_passwd`` writes the same, see mosquitto's ``apps/mosquitto_passwd`` and ``src/password_mosq.c``).
``mosquitto_passwd`` draws a random salt, so the file would change on every run and restart the broker. Here the
salt is ``HMAC-SHA256(salt_key, username NUL password)[:12]``: unique per account and per deployment (the key is
a vault secret), stable while the password is unchanged, new when it changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Final

#: Mosquitto's own default is 101; each CONNECT pays for this once, so it stays moderate.
DEFAULT_ITERATIONS: Final = 10_000
SALT_BYTES: Final = 12


def mosquitto_passwd_hash(password: str, username: str, salt_key: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The ``$7$...`` hash of ``password`` for ``username``, as in a Mosquitto 2 password file."""
    if not password:
        raise ValueError(f"mosquitto account {username!r}: empty password")
    if not salt_key:
        raise ValueError("mosquitto_passwd_hash: the salt key is empty (set mosquitto_password_salt_key)")
    if ":" in username or not username:
        raise ValueError(f"mosquitto account {username!r}: a user name is non-empty and has no ':'")
    if not 1 <= iterations <= 10_000_000:
        raise ValueError(f"mosquitto_passwd_hash: iterations {iterations} out of 1..10000000")
    message = f"{username}\0{password}".encode()
    salt = hmac.new(salt_key.encode(), message, hashlib.sha256).digest()[:SALT_BYTES]
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class FilterModule:
    """Ansible's entry point for filter plugins."""

    def filters(self) -> dict[str, Callable[..., str]]:
        return {"mosquitto_passwd_hash": mosquitto_passwd_hash}
