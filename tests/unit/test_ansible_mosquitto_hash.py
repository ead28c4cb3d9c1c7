"""The mosquitto role's ``mosquitto_passwd_hash`` filter: Mosquitto 2's ``$7$`` format, stable, salted per account;
its ``mosquitto_dynsec_config`` and the local stack's file, both built by ``common/mosquitto_dynsec.py``.

That Mosquitto accepts these hashes is shown end to end in tests/integration/test_ansible_roles.py (the broker
configured by the role lets each account in with its password and refuses a wrong one).
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_IN_ROLE = "ansible/roles/mosquitto/filter_plugins/mosquitto_passwd.py"
PLUGIN = ROOT / PLUGIN_IN_ROLE
DYNSEC_MODULE = "common/mosquitto_dynsec.py"
#: The controller's Python as ansible may run it: the system's, without this project's virtualenv.
SYSTEM_PYTHON = Path("/usr/bin/python3")


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mosquitto_passwd_plugin", PLUGIN)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = load_plugin()
hash_fn: Callable[..., str] = plugin.mosquitto_passwd_hash


def parts(hashed: str) -> tuple[int, bytes, bytes]:
    empty, kind, iterations, salt, digest = hashed.split("$")
    assert (empty, kind) == ("", "7")
    return int(iterations), base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)


def test_format_is_pbkdf2_sha512_with_a_12_byte_salt() -> None:
    iterations, salt, digest = parts(hash_fn("s3cret", "site-a.gw-1", "key", 1000))
    assert iterations == 1000
    assert len(salt) == 12
    assert digest == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 1000)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_same_layout_as_mosquitto_passwd(tmp_path: Path) -> None:
    """The installed mosquitto_passwd writes the same layout (salt and hash sizes, PBKDF2-SHA512)."""
    passwd = tmp_path / "passwd"
    passwd.write_text("u:s3cret\n", encoding="utf-8")
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True, timeout=30)
    user, theirs = passwd.read_text(encoding="utf-8").strip().split(":", 1)
    iterations, salt, digest = parts(theirs)
    assert user == "u"
    assert len(salt) == 12
    assert digest == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, iterations)
    _, our_salt, our_digest = parts(hash_fn("s3cret", "u", "key"))
    assert (len(our_salt), len(our_digest)) == (len(salt), len(digest))


def test_stable_for_the_same_inputs_so_the_file_does_not_change() -> None:
    assert hash_fn("pw", "hub", "key") == hash_fn("pw", "hub", "key")


@pytest.mark.parametrize(
    ("password", "username", "key"),
    [("pw", "site-b.gw-2", "key"), ("pw2", "hub", "key"), ("pw", "hub", "other-key")],
    ids=["other account", "new password", "other deployment"],
)
def test_salt_differs_per_account_password_and_deployment(password: str, username: str, key: str) -> None:
    _, base_salt, _ = parts(hash_fn("pw", "hub", "key"))
    _, salt, _ = parts(hash_fn(password, username, key))
    assert salt != base_salt


@pytest.mark.parametrize(
    ("password", "username", "key", "iterations", "message"),
    [
        ("", "hub", "key", 10, "'hub': empty password"),
        ("pw", "a:b", "key", 10, "has no ':'"),
        ("pw", "", "key", 10, "non-empty"),
        ("pw", "hub", "", 10, "salt key is empty"),
        ("pw", "hub", "key", 0, "iterations 0"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    password: str, username: str, key: str, iterations: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        hash_fn(password, username, key, iterations)


def test_registered_as_an_ansible_filter() -> None:
    assert plugin.FilterModule().filters() == {
        "mosquitto_passwd_hash": hash_fn,
        "mosquitto_dynsec_config": plugin.mosquitto_dynsec_config,
    }


def test_the_dynsec_file_is_the_local_stacks_with_stable_hashes() -> None:
    """The role's ``mosquitto_dynsec_config`` writes what ioc/stack/mosquitto.py writes (ACLs, bound client ids,
    PBKDF2-SHA512 hashes the plugin checks), with salts stable across runs."""
    from ioc.stack.mosquitto import build_accounts, dynsec_config  # noqa: PLC0415 - this test only

    stack = build_accounts([("site-a", "gw-1")])
    accounts = [
        {
            "username": a.username,
            "password": a.password,
            "acl": list(a.acl),
            **({"client_id": a.client_id} if a.client_id else {}),
        }
        for a in stack.values()
    ]
    make: Callable[..., dict[str, object]] = plugin.mosquitto_dynsec_config
    deployed = make(accounts, "salt-key", 1000)
    assert deployed == make(accounts, "salt-key", 1000)  # idempotent: no restart on a second run
    local = dynsec_config(stack, 1000)
    assert deployed["roles"] == local["roles"]
    assert deployed["defaultACLAccess"] == local["defaultACLAccess"]
    clients = deployed["clients"]
    assert isinstance(clients, list)
    for client, account in zip(clients, stack.values(), strict=True):
        assert client.get("clientid") == account.client_id
        salt = base64.b64decode(client["salt"])
        digest = hashlib.pbkdf2_hmac("sha512", account.password.encode(), salt, 1000)
        assert base64.b64decode(client["password"]) == digest


# ------------------------------------------------------------------------------------------------ the shared module


def test_the_filter_and_the_stack_build_the_file_with_one_module() -> None:
    """The filter loads common/mosquitto_dynsec.py from its place in the checkout, the file the stack imports."""
    from common import mosquitto_dynsec  # noqa: PLC0415 - this test only
    from ioc.stack import mosquitto  # noqa: PLC0415 - this test only

    assert Path(mosquitto_dynsec.__file__).resolve() == plugin.DYNSEC_MODULE
    assert Path(plugin.dynsec.__file__).resolve() == plugin.DYNSEC_MODULE
    assert mosquitto.dynsec_acls is mosquitto_dynsec.dynsec_acls


@pytest.mark.parametrize(
    ("line", "acls"),
    [
        ("topic write ioc/v1/s/g/data", [("publishClientSend", "ioc/v1/s/g/data")]),
        (
            "topic read ioc/v1/+/+/state",
            [
                ("publishClientReceive", "ioc/v1/+/+/state"),
                ("subscribePattern", "ioc/v1/+/+/state"),
                ("subscribePattern", "$share/+/ioc/v1/+/+/state"),
            ],
        ),
        (
            "topic readwrite #",
            [
                ("publishClientSend", "#"),
                ("publishClientReceive", "#"),
                ("subscribePattern", "#"),
                ("subscribePattern", "$share/+/#"),
            ],
        ),
        (
            "topic read a topic with spaces",
            [
                ("publishClientReceive", "a topic with spaces"),
                ("subscribePattern", "a topic with spaces"),
                ("subscribePattern", "$share/+/a topic with spaces"),
            ],
        ),
    ],
    ids=["write", "read", "readwrite", "filter with spaces"],
)
def test_an_acl_line_becomes_the_plugins_acls(line: str, acls: list[tuple[str, str]]) -> None:
    assert plugin.dynsec.dynsec_acls([line]) == [
        {"acltype": kind, "topic": topic, "priority": 0, "allow": True} for kind, topic in acls
    ]


@pytest.mark.parametrize("line", ["topic rw x", "pattern read x", "topic read", "user admin"])
def test_an_acl_line_the_plugin_cannot_take_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match=r"expected 'topic read\|write\|readwrite <filter>'"):
        plugin.dynsec.dynsec_acls([line])


def test_the_stacks_file_has_random_salts_and_checkable_hashes() -> None:
    from ioc.stack.mosquitto import build_accounts, dynsec_config  # noqa: PLC0415 - this test only

    accounts = build_accounts([("site-a", "gw-1")])
    first, second = dynsec_config(accounts, 10), dynsec_config(accounts, 10)
    assert first["roles"] == second["roles"]
    for one, two, account in zip(first["clients"], second["clients"], accounts.values(), strict=True):
        assert one["salt"] != two["salt"]  # a fresh random salt on every start
        salt = base64.b64decode(one["salt"])
        assert len(salt) == 12
        assert base64.b64decode(one["password"]) == hashlib.pbkdf2_hmac("sha512", account.password.encode(), salt, 10)
        assert one["iterations"] == 10


# ------------------------------------------------------------------------------------------------ on the controller
# The filter runs in ansible-playbook's Python, which need not have the project (or PyYAML) installed: the module
# it loads stays standard library only, although tests/unit/test_layering.py lets the rest of common/ import yaml.


def non_stdlib_imports(source: str) -> list[str]:
    """Every import in ``source`` of something outside the standard library (``sys.stdlib_module_names``),
    relative imports included, each as written."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] not in sys.stdlib_module_names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] not in sys.stdlib_module_names:
                found.append("." * node.level + module)
    return found


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from __future__ import annotations\nimport base64, hashlib\nfrom collections.abc import Callable", []),
        ("import yaml", ["yaml"]),
        ("from common import paths", ["common"]),
        ("from . import paths", ["."]),
        ("def f():\n    import ioc.stack.mosquitto", ["ioc.stack.mosquitto"]),
    ],
    ids=["stdlib", "yaml", "common", "relative", "in a function"],
)
def test_non_stdlib_imports_are_found(source: str, found: list[str]) -> None:
    assert non_stdlib_imports(source) == found


def test_the_shared_module_imports_the_standard_library_only() -> None:
    assert non_stdlib_imports((ROOT / DYNSEC_MODULE).read_text(encoding="utf-8")) == []


#: Loads the plugin by its path, as ansible does, and prints what its two filters give for the JSON on stdin.
CALL_FILTERS = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("mosquitto_passwd_plugin", sys.argv[1])
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
filters = plugin.FilterModule().filters()
given = json.load(sys.stdin)
json.dump({
    "hash": filters["mosquitto_passwd_hash"](*given["hash"]),
    "config": filters["mosquitto_dynsec_config"](*given["config"]),
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
    "flags": [sys.flags.isolated, sys.flags.no_site, sys.prefix == sys.base_prefix],
}, sys.stdout)
"""
#: Small inputs for both filters: (password, username, salt key, iterations); (accounts, salt key, iterations).
FILTER_INPUTS: dict[str, list[Any]] = {
    "hash": ["s3cret", "site-a.gw-1", "salt-key", 1000],
    "config": [
        [
            {"username": "hub", "password": "pw-hub", "acl": ["topic read ioc/v1/+/+/data"]},
            {
                "username": "site-a.gw-1",
                "password": "pw-gw",
                "acl": ["topic write ioc/v1/site-a/gw-1/data", "topic read ioc/v1/site-a/gw-1/cmd"],
                "client_id": "ioc-edge-site-a.gw-1",
            },
        ],
        "salt-key",
        1000,
    ],
}


def call_filters_on_the_controller(plugin_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Both filters in the system's Python, isolated (-I: no PYTHON* variables, no user site, not the current
    folder) and without site-packages (-S), from ``cwd``; -B so it writes no bytecode into the checkout."""
    return subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-S", "-B", "-c", CALL_FILTERS, str(plugin_path)],
        input=json.dumps(FILTER_INPUTS), cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


needs_system_python = pytest.mark.skipif(not SYSTEM_PYTHON.is_file(), reason=f"{SYSTEM_PYTHON} is not installed")


@needs_system_python
def test_the_filters_run_in_the_system_python_without_the_project(tmp_path: Path) -> None:
    """What the filters give on a controller with nothing of the project installed is what they give here."""
    from common import mosquitto_dynsec  # noqa: PLC0415 - this test only
    from ioc.stack.mosquitto import Account, dynsec_config  # noqa: PLC0415 - this test only

    done = call_filters_on_the_controller(PLUGIN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout)
    assert there["flags"] == [1, 1, True]  # isolated, no site-packages, not a virtualenv
    loaded = set(there["modules"]) - {"__main__", "mosquitto_passwd_plugin", "ioc_common_mosquitto_dynsec"}
    assert loaded <= sys.stdlib_module_names, loaded - sys.stdlib_module_names

    assert there["hash"] == hash_fn(*FILTER_INPUTS["hash"])
    _, salt, digest = parts(there["hash"])
    assert digest == mosquitto_dynsec.password_digest("s3cret", salt, 1000)

    accounts, _, iterations = FILTER_INPUTS["config"]
    assert there["config"] == plugin.mosquitto_dynsec_config(*FILTER_INPUTS["config"])
    local = dynsec_config(
        {a["username"]: Account(a["username"], a["password"], tuple(a["acl"]), a.get("client_id")) for a in accounts},
        iterations,
    )
    assert there["config"]["roles"] == local["roles"]
    assert there["config"]["defaultACLAccess"] == local["defaultACLAccess"]
    for client, account in zip(there["config"]["clients"], accounts, strict=True):
        assert client["username"] == account["username"]
        assert client.get("clientid") == account.get("client_id")
        salt = base64.b64decode(client["salt"])
        assert base64.b64decode(client["password"]) == mosquitto_dynsec.password_digest(
            account["password"], salt, iterations
        )


@needs_system_python
def test_a_shared_module_needing_more_than_the_standard_library_fails_there(tmp_path: Path) -> None:
    """The check above can fail: a checkout whose shared module imports yaml (which the system Python has, in
    its site-packages) cannot load the filters there."""
    for relative in (PLUGIN_IN_ROLE, DYNSEC_MODULE):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, tmp_path / relative)
    shared = tmp_path / DYNSEC_MODULE
    future = "from __future__ import annotations\n"
    shared.write_text(shared.read_text(encoding="utf-8").replace(future, future + "import yaml\n", 1), encoding="utf-8")
    done = call_filters_on_the_controller(tmp_path / PLUGIN_IN_ROLE, cwd=tmp_path)
    assert done.returncode != 0
    assert "No module named 'yaml'" in done.stderr, done.stderr
