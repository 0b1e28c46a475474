"""The gRPC port's TLS credentials, reloaded from their files without a restart.

grpc asks ``CertificateReloader.fetch`` before every new connection's handshake; it
answers a new certificate configuration when the files changed (or SIGHUP asked for a
reload), else None. Connections already open keep the keys they were made with, so a
rotation drops none of them.
"""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from quickpay_engine.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and the CA whose certificates
    clients must present (None: clients are not asked for one)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file the credentials are made of."""
        return (self.cert, self.key) if self.client_ca is None else (
            self.cert, self.key, self.client_ca
        )  # fmt: skip


# What tells a changed file: its inode (a rename into place), size and mtime.
Stamp = tuple[tuple[int, int, int], ...]


def _stamp(files: TlsFiles) -> Stamp:
    stamps = []
    for path in files.paths:
        st = path.stat()
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def load_configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    """The files read and checked: the key must match the certificate and the CA file
    must hold certificates. Raises ConfigError naming the file and what is wrong."""
    try:
        # The check grpc would make only at the first handshake, made now.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"--tls-cert {files.cert} / --tls-key {files.key}: not a certificate chain and"
            f" its private key in PEM ({err})"
        ) from None
    roots = None
    if files.client_ca is not None:
        try:
            ssl.create_default_context(cafile=str(files.client_ca))
            roots = files.client_ca.read_bytes()
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"--tls-client-ca {files.client_ca}: not PEM CA certificates ({err})"
            ) from None
    return grpc.ssl_server_certificate_configuration(
        [(files.key.read_bytes(), files.cert.read_bytes())], root_certificates=roots
    )


class CertificateReloader:
    """The server's TLS credentials, and their reload when the files change or on
    ``request_reload`` (SIGHUP). A reload that fails (a half-written file, a key that
    does not match) is logged and the certificates in use stay."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp = _stamp(files)
        self._initial = load_configuration(files)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.reloads = 0

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``; with a client CA, a client without a
        certificate it signed is refused at the handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,
            require_client_authentication=self.files.client_ca is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's fetcher, called before every new connection's handshake: a stat of each
        file, and a reload when one changed."""
        with self._lock:
            try:
                stamp = _stamp(self.files)
            except OSError:
                stamp = self._stamp  # a file in the middle of a rename: try next time
            if stamp != self._stamp:
                self._reload_locked(stamp, "the files changed")
            pending, self._pending = self._pending, None
            return pending

    def request_reload(self) -> None:
        """Reads the files again now (SIGHUP); new connections use what was read."""
        with self._lock:
            try:
                stamp = _stamp(self.files)
            except OSError as err:
                log.error("TLS reload on SIGHUP failed, keeping the certificates in use: %s", err)
                return
            self._reload_locked(stamp, "SIGHUP")

    def _reload_locked(self, stamp: Stamp, why: str) -> None:
        self._stamp = stamp  # a broken file is reported once, not at every connection
        try:
            self._pending = load_configuration(self.files)
        except ConfigError as err:
            log.error("TLS reload (%s) failed, keeping the certificates in use: %s", why, err)
            return
        self.reloads += 1
        log.info("TLS certificates reloaded (%s): new connections use them", why)
