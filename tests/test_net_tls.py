"""Mutual TLS between the client and the stage servers, and between the stages themselves."""
import dataclasses
import pathlib

import grpc
import numpy as np
import pytest

from deploy.core.open import open_chain
from deploy.net import channels, stage_pb2
from deploy.net.client import ChainCallError, ChainClient
from deploy.net.tls import TlsError, TlsFiles
from tests.net_helpers import (
    addresses,
    make_ca,
    make_cert,
    make_tls,
    serve_chain,
    stop_all,
)


@pytest.fixture(scope="module")
def secured(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    tls = make_tls(folder)
    servers = serve_chain(tiny_run, tls=tls)
    yield folder, tls, servers
    stop_all(servers)


def _feed(tiny_run):
    chain = open_chain(tiny_run, "cpu")[1]
    spec = chain.inputs[0]
    feed = {spec["name"]: np.random.default_rng(1).integers(0, 256, spec["shape"], dtype=np.uint8)}
    return chain, feed


def test_the_chain_works_over_mutual_tls_stage_to_stage(tiny_run, secured):
    _, tls, servers = secured
    chain, feed = _feed(tiny_run)
    with ChainClient(addresses(servers), tls=tls) as client:
        got = client.run(feed)
        assert set(client.health().values()) == {"SERVING"}
    expected = chain.run(feed)
    assert all(got[k].tobytes() == expected[k].tobytes() for k in expected)


def _refused(client, feed):
    with pytest.raises(ChainCallError) as caught:
        client.run(feed, timeout_s=3)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    return caught.value


def test_a_client_without_a_certificate_is_refused(tiny_run, secured):
    _, tls, servers = secured
    _, feed = _feed(tiny_run)
    with ChainClient(addresses(servers)[0]) as plain:                  # no TLS at all
        _refused(plain, feed)
    ca = pathlib.Path(tls.ca).read_bytes()                                  # TLS, trusts the CA, but no client cert
    channel = grpc.secure_channel(addresses(servers)[0], grpc.ssl_channel_credentials(root_certificates=ca))
    with pytest.raises(grpc.RpcError) as caught:
        channels.stage_stub(channel).Describe(stage_pb2.DescribeRequest(), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_with_a_certificate_from_another_ca_is_refused(tiny_run, secured, tmp_path):
    _, tls, servers = secured
    _, feed = _feed(tiny_run)
    other_ca = make_ca(tmp_path, "intruder-ca")
    cert, key = make_cert(tmp_path, other_ca, "intruder")
    # Trusts the right CA for the server, but shows a certificate the servers do not trust.
    intruder = TlsFiles(str(cert), str(key), tls.ca)
    with ChainClient(addresses(servers)[0], tls=intruder) as client:
        _refused(client, feed)


def test_incomplete_tls_files_are_named(tmp_path):
    from argparse import Namespace

    from deploy.net.tls import from_args
    with pytest.raises(TlsError, match="needs all three of --tls-cert, --tls-key and --tls-ca"):
        from_args(Namespace(tls_cert="a.pem", tls_key=None, tls_ca=None))
    missing = dataclasses.replace(TlsFiles("x", "y", "z"), cert=str(tmp_path / "nope.pem"))
    with pytest.raises(TlsError, match="--tls-cert .*nope.pem cannot be read"):
        missing.server_credentials()
