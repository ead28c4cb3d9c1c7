"""``mosquitto_passwd_hash``: a Mosquitto 2 password-file hash computed on the controller, so the role can
template the password file and stay idempotent; ``mosquitto_dynsec_config``: the dynamic-security plugin's file
(accounts with the same hashes, each account's ACL as its role, gateways bound to their client ids), as
``ioc/stack/mosquitto.py`` writes it for the local stack: both build it with ``common/mosquitto_dynsec.py``,
which this plugin loads by its path in the same checkout (the controller's Python need not have the project
installed; that module is standard library only for this reason).

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
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final, NamedTuple

#: Mosquitto's own default is 101; each CONNECT pays for this once, so it stays moderate.
DEFAULT_ITERATIONS: Final = 10_000
#: The shared module, from this file's place in the checkout: ansible/roles/mosquitto/filter_plugins/.
DYNSEC_MODULE: Final = Path(__file__).resolve().parents[4] / "common/mosquitto_dynsec.py"


def _load_dynsec() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ioc_common_mosquitto_dynsec", DYNSEC_MODULE)
    if spec is None or spec.loader is None or not DYNSEC_MODULE.is_file():
        raise ImportError(f"mosquitto filters: {DYNSEC_MODULE} not found (run ansible from the project's checkout)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dynsec = _load_dynsec()
SALT_BYTES: Final[int] = dynsec.SALT_BYTES


class _Account(NamedTuple):
    username: str
    password: str
    acl: Iterable[str]
    client_id: str | None


def _salt(password: str, username: str, salt_key: str, iterations: int) -> bytes:
    """The account's stable salt, once its inputs are checked."""
    if not password:
        raise ValueError(f"mosquitto account {username!r}: empty password")
    if not salt_key:
        raise ValueError("mosquitto_passwd_hash: the salt key is empty (set mosquitto_password_salt_key)")
    if ":" in username or not username:
        raise ValueError(f"mosquitto account {username!r}: a user name is non-empty and has no ':'")
    if not 1 <= iterations <= 10_000_000:
        raise ValueError(f"mosquitto_passwd_hash: iterations {iterations} out of 1..10000000")
    message = f"{username}\0{password}".encode()
    return hmac.new(salt_key.encode(), message, hashlib.sha256).digest()[:SALT_BYTES]


def mosquitto_passwd_hash(password: str, username: str, salt_key: str, iterations: int = DEFAULT_ITERATIONS) -> str:
    """The ``$7$...`` hash of ``password`` for ``username``, as in a Mosquitto 2 password file."""
    salt = _salt(password, username, salt_key, iterations)
    digest: bytes = dynsec.password_digest(password, salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_dynsec_config(
    accounts: Iterable[Mapping[str, Any]], salt_key: str, iterations: int = DEFAULT_ITERATIONS
) -> dict[str, Any]:
    """The plugin's file: one client and one role per account (``username``, ``password``, ``acl`` lines and an
    optional ``client_id`` the account must connect with); what no role grants is refused."""
    listed = [_Account(a["username"], a["password"], a.get("acl", []), a.get("client_id") or None) for a in accounts]
    config: dict[str, Any] = dynsec.dynsec_config(
        listed, lambda username, password: _salt(password, username, salt_key, iterations), iterations
    )
    return config


class FilterModule:
    """Ansible's entry point for filter plugins."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"mosquitto_passwd_hash": mosquitto_passwd_hash, "mosquitto_dynsec_config": mosquitto_dynsec_config}
