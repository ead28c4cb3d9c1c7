"""Mosquitto 2's dynamic-security plugin file (``mosquitto_dynamic_security.so``), built from accounts: one client
and one role per account, the role's ACLs from ACL-file lines, passwords as PBKDF2-SHA512 hashes, a client bound
to one client id where asked; whatever no role grants is refused.

The one copy of this conversion, for both places that write the file: the local stack
(``ioc/stack/mosquitto.py``, random salts) and the ansible role's ``mosquitto_dynsec_config`` filter
(``ansible/roles/mosquitto/filter_plugins/mosquitto_passwd.py``, salts stable per account and deployment). The
filter runs inside ``ansible-playbook`` on the controller, whose Python need not have this project installed, so
it loads this file by its path in the same checkout (``importlib.util.spec_from_file_location``) instead of
importing it. Hence the rules for this module: the standard library only, no import of ``common`` itself or of
anything else of ours (tests/unit/test_layering.py), and nothing that needs the module registered under its name.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

#: Bytes of salt per password hash: what ``mosquitto_passwd`` and the plugin's own ``mosquitto_ctrl`` draw.
SALT_BYTES: Final = 12
#: The plugin's default access for what no role grants (everything refused but unsubscribing).
DEFAULT_ACL_ACCESS: Final = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}
_ACCESS: Final = ("read", "write", "readwrite")


class DynsecAccount(Protocol):
    """What the file needs of an account: its name, password, ACL-file lines and the client id it is bound to."""

    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def acl(self) -> Iterable[str]: ...
    @property
    def client_id(self) -> str | None: ...


def password_digest(password: str, salt: bytes, iterations: int) -> bytes:
    """The PBKDF2-HMAC-SHA512 hash Mosquitto 2 checks a password against (``src/password_mosq.c``)."""
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)


def dynsec_acls(lines: Iterable[str]) -> list[dict[str, Any]]:
    """ACL-file lines (``topic read|write|readwrite <filter>``) as the plugin's ACLs: ``write`` is
    publishClientSend; ``read`` is publishClientReceive and subscribePattern, also as an MQTT 5 shared
    subscription (the plugin checks the whole filter, ``$share/{group}/`` included). ValueError for another line."""
    acls: list[dict[str, Any]] = []
    for line in lines:
        words = line.split(" ", 2)
        if len(words) != 3 or words[0] != "topic" or words[1] not in _ACCESS:
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


def dynsec_config(
    accounts: Iterable[DynsecAccount], salt_for: Callable[[str, str], bytes], iterations: int
) -> dict[str, Any]:
    """The plugin's file for ``accounts``; ``salt_for(username, password)`` gives each password hash's salt."""
    clients = []
    roles = []
    for account in accounts:
        salt = salt_for(account.username, account.password)
        client: dict[str, Any] = {
            "username": account.username,
            "password": base64.b64encode(password_digest(account.password, salt, iterations)).decode(),
            "salt": base64.b64encode(salt).decode(),
            "iterations": iterations,
            "roles": [{"rolename": account.username}],
        }
        if account.client_id:
            client["clientid"] = account.client_id
        clients.append(client)
        roles.append({"rolename": account.username, "acls": dynsec_acls(account.acl)})
    return {"defaultACLAccess": dict(DEFAULT_ACL_ACCESS), "clients": clients, "groups": [], "roles": roles}
