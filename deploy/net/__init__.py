"""Serve the stages of a run folder over gRPC, one server per stage, chained host to host.

  python -m deploy serve-stage --run DIR --stage K --listen HOST:PORT [--next HOST:PORT]
  python -m deploy launch --run DIR                       (all stages locally, one process each)
  python -m deploy chain --hosts h1:p,h2:p,h3:p --run DIR --eval

Modules: ``stage.proto`` (messages; generated ``stage_pb2*``), ``plan`` (what each
stage receives and sends, from the manifest), ``codec`` (numpy <-> Tensor,
checked against the manifest), ``server``, ``client`` (``ChainClient``),
``tls`` (mutual TLS), ``launch`` (``launch_local``). Only this package needs
grpcio; the rest of ``deploy`` runs without it.
"""
