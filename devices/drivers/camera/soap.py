"""The ONVIF device-management messages this driver speaks, as SOAP 1.2 text, and how to read the answers.

Three operations of the ONVIF Core Specification's device service (``http://www.onvif.org/ver10/device/wsdl``):
``GetSystemDateAndTime`` (access class PRE_AUTH: a device answers it without credentials) and
``GetDeviceInformation`` (READ_SYSTEM: credentials unless the device has authentication switched off) and
``SystemReboot`` (UNRECOVERABLE; the camera driver's ``restart`` ability).
Credentials travel as a WS-Security UsernameToken with a password digest (OASIS Web Services Security
UsernameToken Profile 1.0): ``Base64(SHA-1(nonce + created + password))``, the profile the ONVIF Core spec
requires of every device. The simulator (:mod:`devices.sim.onvif`) builds its answers from the same names.

Answers are parsed with the standard library's expat (2.4+ refuses entity-expansion bombs, and external
entities are never fetched); on top of that a document type declaration is refused outright and a body is
capped in size, so a hostile or broken camera costs at most :data:`MAX_BODY_BYTES` of parsing.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from xml.sax.saxutils import escape

SOAP12_ENV: Final = "http://www.w3.org/2003/05/soap-envelope"
SOAP11_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
TDS: Final = "http://www.onvif.org/ver10/device/wsdl"
TT: Final = "http://www.onvif.org/ver10/schema"
TER: Final = "http://www.onvif.org/ver10/error"
WSSE: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE_URI: Final = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
)
BASE64_BINARY: Final = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
#: SOAP 1.2 over HTTP (RFC 3902); the action parameter names the operation, as ONVIF clients send it.
CONTENT_TYPE: Final = "application/soap+xml; charset=utf-8"
#: Larger answers are not read: a device-information answer is well under 4 KB.
MAX_BODY_BYTES: Final = 64 * 1024
#: Strings taken from an answer are cut to this length (the wire contract allows 1024).
MAX_TEXT: Final = 200

GET_SYSTEM_DATE_AND_TIME: Final = "GetSystemDateAndTime"
GET_DEVICE_INFORMATION: Final = "GetDeviceInformation"
#: Access class UNRECOVERABLE: always needs credentials; the answer's Message says when the device restarts.
SYSTEM_REBOOT: Final = "SystemReboot"
#: The ONVIF subcode a device answers when a request's credentials are missing or wrong (Core spec, 5.12).
NOT_AUTHORIZED: Final = "NotAuthorized"


def action_uri(operation: str) -> str:
    """The SOAP action of a device-service operation (``http://www.onvif.org/ver10/device/wsdl/<Op>``)."""
    return f"{TDS}/{operation}"


def content_type(operation: str) -> str:
    """The HTTP Content-Type of a request for ``operation`` (SOAP 1.2 carries the action here)."""
    return f'{CONTENT_TYPE}; action="{action_uri(operation)}"'


def created_stamp(moment: datetime) -> str:
    """``moment`` as the token's ``wsu:Created``: UTC, whole seconds, ``Z`` suffix."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """``Base64(SHA-1(nonce + created + password))`` (UsernameToken Profile 1.0, section 3.1)."""
    # SHA-1 is what the standard prescribes for this digest; it is not our choice of hash.
    raw = hashlib.sha1(nonce + created.encode() + password.encode()).digest()  # noqa: S324
    return base64.b64encode(raw).decode()


def security_header(username: str, password: str, created: str, nonce: bytes | None = None) -> str:
    """The ``wsse:Security`` header block carrying a digest UsernameToken."""
    nonce = secrets.token_bytes(16) if nonce is None else nonce
    digest = password_digest(nonce, created, password)
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}" s:mustUnderstand="1">'
        "<wsse:UsernameToken>"
        f"<wsse:Username>{escape(username)}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST_TYPE_URI}">{digest}</wsse:Password>'
        f'<wsse:Nonce EncodingType="{BASE64_BINARY}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{created}</wsu:Created>"
        "</wsse:UsernameToken>"
        "</wsse:Security>"
    )


def request_envelope(operation: str, security: str = "") -> bytes:
    """A SOAP 1.2 request for a device-service operation without arguments."""
    header = f"<s:Header>{security}</s:Header>" if security else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{SOAP12_ENV}">{header}'
        f'<s:Body><tds:{operation} xmlns:tds="{TDS}"/></s:Body>'
        "</s:Envelope>"
    ).encode()


class SoapError(Exception):
    """The answer is not the expected SOAP 1.2 response (not XML, wrong envelope, wrong element, too big)."""


class SoapFault(Exception):
    """The device answered a SOAP fault; ``subcode`` is the innermost subcode's local name (e.g. NotAuthorized)."""

    def __init__(self, code: str, subcode: str, reason: str, http_status: int) -> None:
        super().__init__(code, subcode, reason, http_status)
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.http_status = http_status

    def __str__(self) -> str:
        sub = f"/{self.subcode}" if self.subcode else ""
        reason = f": {self.reason}" if self.reason else ""
        return f"SOAP fault {self.code}{sub}{reason} (HTTP {self.http_status})"

    @property
    def not_authorized(self) -> bool:
        return self.subcode == NOT_AUTHORIZED


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: ET.Element | None) -> str:
    if element is None or element.text is None:
        return ""
    return " ".join(element.text.split())[:MAX_TEXT]


def parse_xml(body: bytes) -> ET.Element:
    """Parse a SOAP document; :class:`SoapError` if it is too big, declares a DTD or is not well-formed XML."""
    if len(body) > MAX_BODY_BYTES:
        raise SoapError(f"answer of {len(body)} bytes is larger than {MAX_BODY_BYTES}")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise SoapError("answer declares a DTD or entities (refused)")
    try:
        return ET.fromstring(body)  # noqa: S314 - DTDs refused above, size capped, expat >= 2.4
    except ET.ParseError as exc:
        raise SoapError(f"answer is not XML ({exc})") from None


def _fault(fault: ET.Element, http_status: int) -> SoapFault:
    code = fault.find(f"{{{SOAP12_ENV}}}Code")
    value = _text(code.find(f"{{{SOAP12_ENV}}}Value") if code is not None else None)
    subcode_name = ""
    node = code
    while node is not None:
        sub = node.find(f"{{{SOAP12_ENV}}}Subcode")
        if sub is None:
            break
        subcode_name = _text(sub.find(f"{{{SOAP12_ENV}}}Value"))
        node = sub
    reason = _text(fault.find(f"{{{SOAP12_ENV}}}Reason/{{{SOAP12_ENV}}}Text"))
    # Values are QNames (ter:NotAuthorized): keep the local part, the prefix is the sender's choice.
    return SoapFault(
        code=value.rsplit(":", 1)[-1], subcode=subcode_name.rsplit(":", 1)[-1], reason=reason, http_status=http_status
    )


def parse_response(body: bytes, http_status: int, operation: str) -> ET.Element:
    """The ``<tds:{operation}Response>`` element of an answer.

    Raises :class:`SoapFault` when the body is a SOAP fault (whatever the HTTP status), :class:`SoapError`
    when it is anything but the expected response.
    """
    root = parse_xml(body)
    if root.tag == f"{{{SOAP11_ENV}}}Envelope":
        raise SoapError("answer is a SOAP 1.1 envelope; ONVIF devices answer SOAP 1.2")
    if root.tag != f"{{{SOAP12_ENV}}}Envelope":
        raise SoapError(f"answer is not a SOAP envelope (root element {_local(root.tag)!r})")
    body_el = root.find(f"{{{SOAP12_ENV}}}Body")
    if body_el is None or len(body_el) == 0:
        raise SoapError("SOAP envelope without a body")
    first = body_el[0]
    if first.tag == f"{{{SOAP12_ENV}}}Fault":
        raise _fault(first, http_status)
    if http_status != 200:
        raise SoapError(f"HTTP {http_status} with a SOAP body that is not a fault")
    expected = f"{{{TDS}}}{operation}Response"
    if first.tag != expected:
        raise SoapError(f"expected {operation}Response, got {_local(first.tag)!r}")
    return first


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """What ``GetDeviceInformation`` tells (all five fields are mandatory in the WSDL)."""

    manufacturer: str
    model: str
    firmware_version: str
    serial_number: str
    hardware_id: str


def device_information(response: ET.Element) -> DeviceInformation:
    """Read a ``GetDeviceInformationResponse``; :class:`SoapError` if Manufacturer or Model is missing."""

    def field(name: str) -> str:
        return _text(response.find(f"{{{TDS}}}{name}"))

    info = DeviceInformation(
        manufacturer=field("Manufacturer"),
        model=field("Model"),
        firmware_version=field("FirmwareVersion"),
        serial_number=field("SerialNumber"),
        hardware_id=field("HardwareId"),
    )
    if not info.manufacturer or not info.model:
        raise SoapError("GetDeviceInformationResponse without Manufacturer or Model")
    return info


def system_utc_time(response: ET.Element) -> datetime:
    """The device's UTC clock from a ``GetSystemDateAndTimeResponse``; :class:`SoapError` if absent or invalid."""
    utc = response.find(f"{{{TDS}}}SystemDateAndTime/{{{TT}}}UTCDateTime")
    if utc is None:
        raise SoapError("GetSystemDateAndTimeResponse without UTCDateTime")
    parts: dict[str, int] = {}
    for path in ("Date/Year", "Date/Month", "Date/Day", "Time/Hour", "Time/Minute", "Time/Second"):
        text = _text(utc.find("/".join(f"{{{TT}}}{p}" for p in path.split("/"))))
        try:
            parts[path] = int(text)
        except ValueError:
            raise SoapError(f"UTCDateTime {path} is {text!r}, not a number") from None
    try:
        return datetime(
            parts["Date/Year"],
            parts["Date/Month"],
            parts["Date/Day"],
            parts["Time/Hour"],
            parts["Time/Minute"],
            parts["Time/Second"],
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise SoapError(f"UTCDateTime is not a valid date: {exc}") from None


def reboot_message(response: ET.Element) -> str:
    """The ``Message`` of a ``SystemRebootResponse`` ("" when the device gives none)."""
    return _text(response.find(f"{{{TDS}}}Message"))
