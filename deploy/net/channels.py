"""gRPC channels to stages: message size limits, fast reconnects, optional mutual TLS."""
import grpc

from deploy.net import stage_pb2_grpc
from runfolder.errors import OptionError

# A restarted stage is found again within about a second instead of gRPC's default backoff of up to 2 minutes.
RECONNECT_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000)]
# While calls are open, ping every 2 s and give up after 2 s without an answer: a stage that stops
# answering without closing its connection (powered off, network cut, frozen) fails its calls within
# a few seconds instead of hanging until the deadline (gRPC's own ping timeout is a minute).
# Servers accept pings this often (SERVER_KEEPALIVE_OPTIONS).
KEEPALIVE_OPTIONS = [("grpc.keepalive_time_ms", 2000), ("grpc.keepalive_timeout_ms", 2000),
                     ("grpc.keepalive_permit_without_calls", 0), ("grpc.http2.max_pings_without_data", 0),
                     ("grpc.http2.ping_timeout_ms", 2000)]
SERVER_KEEPALIVE_OPTIONS = [("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                            ("grpc.http2.max_ping_strikes", 0)]
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def open_channel(address, tls=None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES):
    """A channel to ``host:port`` (plain, or mutual TLS with a ``TlsFiles``)."""
    options = RECONNECT_OPTIONS + KEEPALIVE_OPTIONS + [("grpc.max_receive_message_length", max_message_bytes),
                                   ("grpc.max_send_message_length", max_message_bytes)]
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options=options + tls.channel_options())


def stage_stub(channel):
    return stage_pb2_grpc.StageStub(channel)


def split_hosts(hosts):
    """['h1:p', 'h2:p'] from a comma list or a list; ValueError when an address has no port."""
    items = [h.strip() for h in (hosts.split(",") if isinstance(hosts, str) else hosts) if h.strip()]
    if not items:
        raise OptionError("no stage address given; pass HOST:PORT of the first stage (or of every stage)")
    for item in items:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise OptionError(f"stage address '{item}' is not HOST:PORT (e.g. 127.0.0.1:50051)")
    return items
