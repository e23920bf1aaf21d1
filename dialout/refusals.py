"""Why a controller refused a client, as one catalogue both halves read: the controller names what it refused and
says the fix (its log, ``/diagnosis``, ``explain``); the switch, refused for the same reason, says the same words.

A refusal is of a TLS handshake (the client is not let in: no name is known, only its address) or of a request on a
connection that got in (403: the certificate is verified, its name is not in the fleet). ``Refusal`` names each
kind; ``what`` and ``fix`` are its words. The kind comes from OpenSSL's reason for the failed handshake on the
controller's side (``of_handshake_error``), and from the alert the controller sent on the switch's
(``of_alert``).

A leaf module: nothing of Quart, Hypercorn or httpx.
"""

from __future__ import annotations

import difflib
import enum
import fnmatch
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from dialout.pages import Page, read_more


class Refusal(enum.StrEnum):
    """Stable names: scripts match on them in ``/diagnosis`` JSON."""

    NO_CERTIFICATE = "no_certificate"
    UNKNOWN_CA = "unknown_ca"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_KEY_USAGE = "wrong_key_usage"
    CERTIFICATE_REJECTED = "certificate_rejected"  # any other failed verification of the client's certificate
    CONTROLLER_UNTRUSTED = "controller_untrusted"  # the client refused the controller's certificate
    PLAIN_HTTP = "plain_http"
    NOT_TLS = "not_tls"
    TLS_VERSION = "tls_version"
    NO_SHARED_CIPHER = "no_shared_cipher"
    ALPN_MISMATCH = "alpn_mismatch"
    HUNG_UP = "hung_up"
    OTHER = "other"
    NOT_IN_FLEET = "not_in_fleet"  # 403: a verified certificate whose name is not in controller.switches
    PROXY_UNVERIFIED = "proxy_unverified"  # 403: a trusted proxy forwarded a certificate we could not verify


# The refusals of a certificate, whose fixes docs/pki.md explains at length.
_OF_CERTIFICATES = frozenset(Refusal) - {
    Refusal.PLAIN_HTTP,
    Refusal.NOT_TLS,
    Refusal.TLS_VERSION,
    Refusal.NO_SHARED_CIPHER,
    Refusal.ALPN_MISMATCH,
    Refusal.OTHER,
}


@dataclass(frozen=True)
class Words:
    what: str  # what the client did, as the controller saw it
    fix: str  # what to change, on the client's side as a rule


_WORDS: dict[Refusal, Words] = {
    Refusal.NO_CERTIFICATE: Words(
        "the client sent no certificate, and the controller requires one (mutual TLS)",
        "give the client its certificate and key: curl --cert switch-1.pem --key switch-1.key; Go: "
        "tls.Config.Certificates; dialout's switch: switch.id names <id>.pem and <id>.key in certs_dir",
    ),
    Refusal.UNKNOWN_CA: Words(
        "the client's certificate is not issued by a CA the controller trusts",
        "use a certificate issued by the controller's CA (certs_dir/ca.pem, made by `python -m controller certs`), "
        "or make the controller trust the client's CA (controller.tls.client_ca)",
    ),
    Refusal.EXPIRED: Words(
        "the client's certificate has expired",
        "issue it anew: delete the switch's <id>.pem and <id>.key and run `python -m controller certs`, or renew it "
        "in your own PKI",
    ),
    Refusal.NOT_YET_VALID: Words(
        "the client's certificate is not valid yet (its notBefore is in the future: a clock off on one side?)",
        "check both machines' clocks, or issue the certificate again",
    ),
    Refusal.WRONG_KEY_USAGE: Words(
        "the client's certificate is not for client authentication (its extended key usage lacks clientAuth: a "
        "server's certificate, say)",
        "give the client a switch's certificate (extended key usage clientAuth), not the controller's or another "
        "server's",
    ),
    Refusal.CERTIFICATE_REJECTED: Words(
        "the controller could not verify the client's certificate",
        "check the certificate against the controller's CA: openssl verify -CAfile certs/ca.pem switch-1.pem",
    ),
    Refusal.CONTROLLER_UNTRUSTED: Words(
        "the client refused the controller's certificate (its alert said so): it does not trust the CA that issued "
        "it, or the name it dialled is not on it",
        "give the client the controller's CA (curl --cacert certs/ca.pem; Go: tls.Config.RootCAs) and dial a name "
        "the controller's certificate carries (controller.hostnames)",
    ),
    Refusal.PLAIN_HTTP: Words(
        "the client spoke plain HTTP to the TLS port",
        "dial https://, not http:// (or use the cleartext listener, controller.cleartext, for h2c)",
    ),
    Refusal.NOT_TLS: Words(
        "the client sent something that is not TLS to the TLS port",
        "dial the TLS port with TLS (https://)",
    ),
    Refusal.TLS_VERSION: Words(
        "the client offered only TLS versions the controller does not accept",
        "let the client use TLS 1.2 or 1.3",
    ),
    Refusal.NO_SHARED_CIPHER: Words(
        "the client offered no cipher suite the controller accepts",
        "let the client offer a modern suite (TLS 1.3's, or ECDHE with AES-GCM or ChaCha20 under TLS 1.2)",
    ),
    Refusal.ALPN_MISMATCH: Words(
        "the client offered only application protocols the controller does not speak",
        "offer ALPN h2 (and http/1.1 if you like); h2c is for the cleartext listener, not TLS",
    ),
    Refusal.HUNG_UP: Words(
        "the client closed the connection during the handshake, without saying why (some clients hang up so when "
        "they do not trust the controller's certificate)",
        "check that the client trusts the controller's CA (certs_dir/ca.pem) and dials a name on its certificate",
    ),
    Refusal.OTHER: Words(
        "the handshake failed",
        "run the client with its TLS debugging on (curl -v, GODEBUG=tls13=1), and see OpenSSL's reason here",
    ),
    Refusal.NOT_IN_FLEET: Words(
        "the client's certificate is verified, but its name is not in the controller's fleet",
        "give the client a certificate of a switch in controller.switches, or add its name there",
    ),
    Refusal.PROXY_UNVERIFIED: Words(
        "a trusted proxy forwarded a client certificate the controller could not verify",
        "let the proxy forward only certificates it verified itself (nginx: ssl_verify_client on)",
    ),
}

# OpenSSL's reasons, on the controller's side of a failed handshake.
_BY_REASON: dict[str, Refusal] = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": Refusal.NO_CERTIFICATE,
    "TLSV1_ALERT_UNKNOWN_CA": Refusal.CONTROLLER_UNTRUSTED,
    "SSLV3_ALERT_BAD_CERTIFICATE": Refusal.CONTROLLER_UNTRUSTED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": Refusal.CONTROLLER_UNTRUSTED,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": Refusal.CONTROLLER_UNTRUSTED,
    "TLSV1_ALERT_DECRYPT_ERROR": Refusal.CONTROLLER_UNTRUSTED,
    "HTTP_REQUEST": Refusal.PLAIN_HTTP,
    "HTTPS_PROXY_REQUEST": Refusal.PLAIN_HTTP,
    "WRONG_VERSION_NUMBER": Refusal.NOT_TLS,
    "PACKET_LENGTH_TOO_LONG": Refusal.NOT_TLS,
    "RECORD_LAYER_FAILURE": Refusal.NOT_TLS,
    "UNSUPPORTED_PROTOCOL": Refusal.TLS_VERSION,
    "VERSION_TOO_LOW": Refusal.TLS_VERSION,
    "TLSV1_ALERT_PROTOCOL_VERSION": Refusal.TLS_VERSION,
    "NO_SHARED_CIPHER": Refusal.NO_SHARED_CIPHER,
    "NO_APPLICATION_PROTOCOL": Refusal.ALPN_MISMATCH,
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": Refusal.ALPN_MISMATCH,
    "UNEXPECTED_EOF_WHILE_READING": Refusal.HUNG_UP,
}
# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) of a client certificate that failed verification.
_BY_VERIFY_CODE: dict[int, Refusal] = {
    2: Refusal.UNKNOWN_CA,  # unable to get issuer certificate
    18: Refusal.UNKNOWN_CA,  # self-signed certificate
    19: Refusal.UNKNOWN_CA,  # self-signed certificate in certificate chain
    20: Refusal.UNKNOWN_CA,  # unable to get local issuer certificate
    21: Refusal.UNKNOWN_CA,  # unable to verify the first certificate
    9: Refusal.NOT_YET_VALID,
    10: Refusal.EXPIRED,
    26: Refusal.WRONG_KEY_USAGE,  # unsupported certificate purpose
}
# The alerts a controller sends when it refuses the client's certificate, as the switch's OpenSSL reads them.
_BY_ALERT: dict[str, Refusal] = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": Refusal.NO_CERTIFICATE,
    # TLS 1.2 has no "certificate required" alert; a server that wanted one sends this generic one.
    "SSLV3_ALERT_HANDSHAKE_FAILURE": Refusal.NO_CERTIFICATE,
    "TLSV1_ALERT_UNKNOWN_CA": Refusal.UNKNOWN_CA,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": Refusal.EXPIRED,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": Refusal.WRONG_KEY_USAGE,
    "SSLV3_ALERT_BAD_CERTIFICATE": Refusal.CERTIFICATE_REJECTED,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": Refusal.CERTIFICATE_REJECTED,
    "TLSV1_ALERT_ACCESS_DENIED": Refusal.CERTIFICATE_REJECTED,
}


def words(refusal: Refusal) -> Words:
    return _WORDS[refusal]


def explained(refusal: Refusal) -> str:
    """``what. Fix: fix``: one sentence a person can act on, and where to read more of certificates."""
    said = _WORDS[refusal]
    more = f"; {read_more(Page.PKI)}" if refusal in _OF_CERTIFICATES else ""
    return f"{said.what}. Fix: {said.fix}{more}"


def of_handshake_error(exc: ssl.SSLError) -> Refusal:
    """What a failed server-side handshake refused, from OpenSSL's reason (and verify code, if it verified)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _BY_VERIFY_CODE.get(exc.verify_code, Refusal.CERTIFICATE_REJECTED)
    return _BY_REASON.get(exc.reason or "", Refusal.OTHER)


def of_alert(reason: str | None) -> Refusal | None:
    """What the controller refused, from the alert the client read (None: not an alert that refuses a client)."""
    return _BY_ALERT.get(reason or "")


def openssl_words(exc: ssl.SSLError) -> str:
    """OpenSSL's own reason, for the log beside ours (``certificate has expired``, ``HTTP_REQUEST``)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    return str(exc.reason or exc)


def listed(name: str, names: Sequence[str]) -> bool:
    """``name`` is one of ``names``, or matches one of them that is a pattern (``fleet-*``): who the controller lets
    in (``controller.switches``, ``controller.operators``)."""
    return name in names or any("*" in entry and fnmatch.fnmatchcase(name, entry) for entry in names)


def did_you_mean(name: str, fleet: Sequence[str]) -> str | None:
    """The fleet's name closest to ``name`` (``switch-1`` for ``switch-01``), if one is close (patterns left out)."""
    close = difflib.get_close_matches(name, [entry for entry in fleet if "*" not in entry], n=1, cutoff=0.6)
    return close[0] if close else None
