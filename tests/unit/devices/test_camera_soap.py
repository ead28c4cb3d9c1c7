"""The ONVIF SOAP pieces: the WS-Security digest against the published example, envelopes, answers parsed."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from devices.drivers.camera import soap
from devices.sim.onvif import fault_body


def test_password_digest_matches_the_onvif_programmers_guide_example() -> None:
    # ONVIF Application Programmer's Guide (v1.0, 2011), 6.1.1.3 "User authentication": the worked example.
    nonce = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    assert soap.password_digest(nonce, "2010-09-16T07:50:45Z", "userpassword") == "tuOSpGlFlIXsozq4HFNeeGeFLEI="


def test_created_stamp_is_utc_whole_seconds_with_z() -> None:
    assert soap.created_stamp(datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


def test_a_secured_request_is_a_soap12_envelope_with_a_digest_token() -> None:
    nonce = b"0123456789abcdef"
    header = soap.security_header("ad<min", "pw", "2026-01-02T03:04:05Z", nonce=nonce)
    doc = ET.fromstring(soap.request_envelope(soap.GET_DEVICE_INFORMATION, header))
    assert doc.tag == f"{{{soap.SOAP12_ENV}}}Envelope"
    token = doc.find(f"{{{soap.SOAP12_ENV}}}Header/{{{soap.WSSE}}}Security/{{{soap.WSSE}}}UsernameToken")
    assert token is not None
    assert token.findtext(f"{{{soap.WSSE}}}Username") == "ad<min"  # escaped in the XML, intact once parsed
    password = token.find(f"{{{soap.WSSE}}}Password")
    assert password is not None
    assert password.get("Type") == soap.DIGEST_TYPE_URI
    assert password.text == soap.password_digest(nonce, "2026-01-02T03:04:05Z", "pw")
    assert token.findtext(f"{{{soap.WSSE}}}Nonce") == base64.b64encode(nonce).decode()
    assert token.findtext(f"{{{soap.WSU}}}Created") == "2026-01-02T03:04:05Z"
    body = doc.find(f"{{{soap.SOAP12_ENV}}}Body")
    assert body is not None
    assert body[0].tag == f"{{{soap.TDS}}}GetDeviceInformation"


def test_an_unsecured_request_has_no_header() -> None:
    doc = ET.fromstring(soap.request_envelope(soap.GET_SYSTEM_DATE_AND_TIME))
    assert doc.find(f"{{{soap.SOAP12_ENV}}}Header") is None
    assert soap.content_type("GetSystemDateAndTime") == (
        'application/soap+xml; charset=utf-8; action="http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"'
    )


def envelope(body: str, ns: str = soap.SOAP12_ENV) -> bytes:
    return (
        f'<e:Envelope xmlns:e="{ns}" xmlns:tds="{soap.TDS}" xmlns:tt="{soap.TT}"><e:Body>{body}</e:Body></e:Envelope>'
    ).encode()


INFO = (
    "<tds:GetDeviceInformationResponse><tds:Manufacturer>Acme</tds:Manufacturer><tds:Model>X1</tds:Model>"
    "<tds:FirmwareVersion>2.0</tds:FirmwareVersion><tds:SerialNumber>S1</tds:SerialNumber>"
    "<tds:HardwareId>H1</tds:HardwareId></tds:GetDeviceInformationResponse>"
)


def test_device_information_is_read() -> None:
    answer = soap.parse_response(envelope(INFO), 200, soap.GET_DEVICE_INFORMATION)
    assert soap.device_information(answer) == soap.DeviceInformation("Acme", "X1", "2.0", "S1", "H1")


def test_device_information_without_model_is_an_error() -> None:
    body = "<tds:GetDeviceInformationResponse><tds:Manufacturer>A</tds:Manufacturer></tds:GetDeviceInformationResponse>"
    answer = soap.parse_response(envelope(body), 200, soap.GET_DEVICE_INFORMATION)
    with pytest.raises(soap.SoapError, match="without Manufacturer or Model"):
        soap.device_information(answer)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"@@not xml", 200, "answer is not XML"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', 200, "declares a DTD"),
        (b"x" * (soap.MAX_BODY_BYTES + 1), 200, "larger than"),
        (b"<html><body>hello</body></html>", 200, "not a SOAP envelope (root element 'html')"),
        (envelope(INFO, ns=soap.SOAP11_ENV), 200, "SOAP 1.1 envelope"),
        (envelope(""), 200, "without a body"),
        (envelope(INFO), 500, "HTTP 500 with a SOAP body that is not a fault"),
        (envelope("<tds:GetUsersResponse/>"), 200, "expected GetDeviceInformationResponse, got 'GetUsersResponse'"),
    ],
)
def test_answers_that_are_not_the_response_are_errors(body: bytes, status: int, message: str) -> None:
    with pytest.raises(soap.SoapError, match=message.replace("(", r"\(").replace(")", r"\)")):
        soap.parse_response(body, status, soap.GET_DEVICE_INFORMATION)


@pytest.mark.parametrize(
    ("code", "subcode", "status", "not_authorized", "text"),
    [
        ("Sender", "NotAuthorized", 400, True, "SOAP fault Sender/NotAuthorized: why (HTTP 400)"),
        ("Receiver", "ActionNotSupported", 500, False, "SOAP fault Receiver/ActionNotSupported: why (HTTP 500)"),
        # A fault is a fault whatever the HTTP status (some cameras answer faults with 200).
        ("Sender", "NotAuthorized", 200, True, "SOAP fault Sender/NotAuthorized: why (HTTP 200)"),
    ],
)
def test_faults_are_read_with_their_innermost_subcode(
    code: str, subcode: str, status: int, not_authorized: bool, text: str
) -> None:
    with pytest.raises(soap.SoapFault) as info:
        soap.parse_response(fault_body(code, subcode, "why"), status, soap.GET_DEVICE_INFORMATION)
    assert info.value.code == code
    assert info.value.subcode == subcode
    assert info.value.not_authorized is not_authorized
    assert str(info.value) == text


def date_time(year: str = "2026", month: str = "11", second: str = "9") -> bytes:
    return envelope(
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:UTCDateTime>"
        f"<tt:Time><tt:Hour>14</tt:Hour><tt:Minute>5</tt:Minute><tt:Second>{second}</tt:Second></tt:Time>"
        f"<tt:Date><tt:Year>{year}</tt:Year><tt:Month>{month}</tt:Month><tt:Day>28</tt:Day></tt:Date>"
        "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
    )


def test_system_utc_time_is_read() -> None:
    answer = soap.parse_response(date_time(), 200, soap.GET_SYSTEM_DATE_AND_TIME)
    assert soap.system_utc_time(answer) == datetime(2026, 11, 28, 14, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"year": "twenty"}, "Date/Year is 'twenty'"), ({"month": "13"}, "not a valid date")],
)
def test_bad_system_time_is_an_error(kwargs: dict[str, str], message: str) -> None:
    answer = soap.parse_response(date_time(**kwargs), 200, soap.GET_SYSTEM_DATE_AND_TIME)
    with pytest.raises(soap.SoapError, match=message):
        soap.system_utc_time(answer)


def test_system_time_without_utc_is_an_error() -> None:
    body = envelope("<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime/></tds:GetSystemDateAndTimeResponse>")
    answer = soap.parse_response(body, 200, soap.GET_SYSTEM_DATE_AND_TIME)
    with pytest.raises(soap.SoapError, match="without UTCDateTime"):
        soap.system_utc_time(answer)
