"""Sparkplug B (Eclipse Sparkplug 3.0), the MQTT convention of industrial SCADA (Ignition,
HiveMQ, Canary): the gateway as an edge node, its devices as Sparkplug devices, beside the
plain JSON topics. `node.py` is the edge node; `sparkplug_b_pb2.py` is generated from the
specification's schema, `sparkplug_b.proto`, with protobuf (docs/sparkplug.md)."""
