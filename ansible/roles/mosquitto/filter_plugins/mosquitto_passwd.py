"""``mosquitto_passwd_hash``: a Mosquitto 2 password-file hash computed on the controller, so the role can
template the password file and stay idempotent; ``mosquitto_dynsec_config``: the dynamic-security plugin's file
(accounts with the same hashes, each account's ACL as its role, gateways bound to their client ids), as
``ioc/stack/mosquitto.py`` writes it for the local stack.

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
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

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


def dynsec_acls(lines: Iterable[str]) -> list[dict[str, Any]]:
    """ACL-file lines (``topic read|write|readwrite <filter>``) as the dynamic-security plugin's ACLs: ``write``
    is publishClientSend; ``read`` is publishClientReceive and subscribePattern, also as an MQTT 5 shared
    subscription (the plugin checks the whole filter, ``$share/{group}/`` included). As ioc/stack/mosquitto.py."""
    acls: list[dict[str, Any]] = []
    for line in lines:
        words = line.split(" ", 2)
        if len(words) != 3 or words[0] != "topic" or words[1] not in ("read", "write", "readwrite"):
            raise ValueError(f"ACL line {line!r}: expected 'topic read|write|readwrite <filter>'")
        _, access, topic_filter = words
        kinds = []
        if access in ("write", "readwrite"):
            kinds.append(("publishClientSend", topic_filter))
        if access in ("read", "readwrite"):
            kinds += [
                ("publishClientReceive", topic_filter),
                ("subscribePattern", topic_filter),
                ("subscribePattern", f"$share/+/{topic_filter}"),
            ]
        acls += [{"acltype": kind, "topic": t, "priority": 0, "allow": True} for kind, t in kinds]
    return acls


def mosquitto_dynsec_config(
    accounts: Iterable[Mapping[str, Any]], salt_key: str, iterations: int = DEFAULT_ITERATIONS
) -> dict[str, Any]:
    """The plugin's file: one client and one role per account (``username``, ``password``, ``acl`` lines and an
    optional ``client_id`` the account must connect with); what no role grants is refused."""
    clients = []
    roles = []
    for account in accounts:
        username, password = account["username"], account["password"]
        _, _, _, salt, digest = mosquitto_passwd_hash(password, username, salt_key, iterations).split("$")
        client: dict[str, Any] = {
            "username": username,
            "password": digest,
            "salt": salt,
            "iterations": iterations,
            "roles": [{"rolename": username}],
        }
        if account.get("client_id"):
            client["clientid"] = account["client_id"]
        clients.append(client)
        roles.append({"rolename": username, "acls": dynsec_acls(account.get("acl", []))})
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


class FilterModule:
    """Ansible's entry point for filter plugins."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"mosquitto_passwd_hash": mosquitto_passwd_hash, "mosquitto_dynsec_config": mosquitto_dynsec_config}
