"""MQTT over TLS with a password: a CA and a server certificate made here, Mosquitto's TLS
listener, gatewayd trusting only that CA and reading its password from a private file."""

import datetime
import getpass
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatewayd.config import ConfigError, load_config
from gatewayd.demo.virtual_node import VirtualNode, free_port

pytestmark = pytest.mark.integration


def make_pki(folder):
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )


def test_tls_and_password(tmp_path):
    make_pki(tmp_path)
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "gw", "s3cret"], check=True, capture_output=True
    )
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\ncafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'server.pem'}\n"
        f"keyfile {tmp_path / 'server.key'}\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
        # as root, mosquitto would drop to its own user, which cannot read the test's folder
        f"persistence false\nuser {getpass.getuser()}\n"
    )
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    node = VirtualNode(unit=1, seed=2)
    node.start()
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nname = "tls-site"\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nusername = "gw"\npassword_file = "{secret}"\n'
        f'ca_file = "{tmp_path / "ca.pem"}"\n\n'
        f'[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\nport = {node.port}\n'
    )
    got: list[dict] = []
    lock = threading.Lock()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    proc = None
    try:
        with pytest.raises(ConfigError, match="mqtt.password_file: .* is world-readable"):
            load_config(config)
        os.chmod(secret, 0o600)
        load_config(config)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)
        sub.tls_set(ca_certs=str(tmp_path / "ca.pem"), cert_reqs=ssl.CERT_REQUIRED)
        sub.username_pw_set("gw", "s3cret")
        sub.on_message = lambda c, u, m: (lock.acquire(), got.append(json.loads(m.payload)), lock.release())
        sub.connect("127.0.0.1", port)
        sub.subscribe("gateway/tls-site/#", qos=1)
        sub.loop_start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatewayd", "run", "--config", str(config)], stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if any(m.get("values") for m in got):
                    break
            time.sleep(0.1)
        with lock:
            assert any(m.get("state") == "online" for m in got) and any(m.get("values") for m in got), got[-3:]
    finally:
        sub.loop_stop()
        sub.disconnect()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)
        node.stop()
        broker.terminate()
        broker.wait(timeout=10)
