"""Mutual TLS between the caller and the stages: each side shows a certificate signed by the shared CA.

A server started with ``--tls-cert/--tls-key/--tls-ca`` accepts only clients
presenting a certificate from that CA, and uses the same certificate when it
calls the next stage. Without these options traffic is plain (bind to loopback
or a private network then).
"""
import dataclasses
import pathlib
from runfolder.errors import UserError


class TlsError(UserError, ValueError):
    """The TLS files are missing or incomplete."""


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cert: str              # this side's certificate chain (PEM)
    key: str               # its private key (PEM)
    ca: str                # the CA that signed the other sides' certificates (PEM)
    server_name: str = None  # name to check in the server's certificate instead of the address's host

    def _read(self):
        blobs = []
        for label, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            try:
                blobs.append(pathlib.Path(path).read_bytes())
            except OSError as exc:
                raise TlsError(f"{label} {path} cannot be read: {exc.strerror}") from None
        return blobs

    def server_credentials(self):
        import grpc
        cert, key, ca = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self):
        import grpc
        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self):
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def from_args(args):
    """TlsFiles from ``--tls-cert/--tls-key/--tls-ca`` (None when none is given)."""
    given = [args.tls_cert, args.tls_key, args.tls_ca]
    if not any(given):
        return None
    if not all(given):
        raise TlsError("mutual TLS needs all three of --tls-cert, --tls-key and --tls-ca")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca, getattr(args, "tls_server_name", None))


def add_arguments(parser):
    parser.add_argument("--tls-cert", help="this side's certificate (PEM) for mutual TLS")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    parser.add_argument("--tls-ca", help="the CA certificate (PEM) the other sides' certificates are signed by")
    parser.add_argument("--tls-server-name", help="name to expect in the servers' certificates "
                                                  "(default: the host of each address)")
