"""A gateway's client id: the agent's and the broker account's binding agree, and no two gateways share one."""

from __future__ import annotations

import itertools

import pytest

from edge.publisher import client_id
from ioc.stack.mosquitto import gateway_client_id

#: Ids that a dash-joined client id would confuse: ("a-b", "c") and ("a", "b-c") were both "ioc-edge-a-b-c".
GATEWAYS = [("a-b", "c"), ("a", "b-c"), ("a-b-c", "d"), ("a", "b-c-d"), ("site-a", "gw-1"), ("site-a-gw", "1")]


@pytest.mark.parametrize(("site", "gateway"), GATEWAYS)
def test_the_agent_connects_with_the_id_its_account_is_bound_to(site: str, gateway: str) -> None:
    assert client_id(site, gateway) == gateway_client_id(site, gateway) == f"ioc-edge-{site}.{gateway}"


def test_no_two_gateways_share_a_client_id() -> None:
    for one, other in itertools.combinations(GATEWAYS, 2):
        assert client_id(*one) != client_id(*other), (one, other)
