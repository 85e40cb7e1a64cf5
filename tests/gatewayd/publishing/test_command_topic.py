"""The MQTT command topic's boundary, without a broker: decoding (size, UTF-8, depth, JSON),
validation, authorisation (signatures, replays, clocks), the handler that answers and
dead-letters everything, the `command` configuration keys and `gatewayd command sign`."""

import json
import logging
import os
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.alerts import commands
from gatewayd.alerts.commands import MAX_DEPTH, MAX_PAYLOAD_BYTES, CommandError, Missed, decode, nesting, validate_any
from gatewayd.cli.main import main
from gatewayd.config import ConfigError, load_config, parse_config
from gatewayd.publishing import command_auth
from gatewayd.publishing.command_auth import WINDOW_S, Authoriser, mac, sign
from gatewayd.publishing.command_topic import DEAD_LETTER_BYTES, RECORD_BURST, RECORD_EVERY_S, CommandTopic
from gatewayd.publishing.mqtt import Publisher
from gatewayd.store.database import Store

SECRET = b"0123456789abcdef-secret"
NOW = 1_795_000_000_000  # UTC ms of the fake wall clock


class Clocks:
    """A wall clock (ms) and a monotonic one (s), moved by hand."""

    def __init__(self):
        self.wall = NOW
        self.mono = 1000.0

    def wall_ms(self):
        return self.wall

    def monotonic(self):
        return self.mono

    def advance(self, seconds, wall_step_s=0.0):
        self.mono += seconds
        self.wall += int((seconds + wall_step_s) * 1000)


def authoriser(clocks, secret=SECRET, unsigned=False):
    return Authoriser("g", secret, unsigned, wall_ms=clocks.wall_ms, monotonic=clocks.monotonic)


def signed(command, clocks=None, *, secret=SECRET, gateway="g", at_ms=None, nonce=None):
    now = at_ms if at_ms is not None else (clocks.wall if clocks else NOW)
    return decode(sign(command, secret, gateway, now_ms=now, nonce=nonce))


ACK = {"command": "ack", "alert": "g:pump-1:model:1"}


# -- decoding --------------------------------------------------------------------------------


def refused(payload, match):
    with pytest.raises(CommandError, match=match):
        decode(payload)


def test_deep_nesting_is_refused_without_recursing():
    assert nesting("[" * 100_000, MAX_DEPTH) == MAX_DEPTH + 1  # stops counting: no recursion, no walk to the end
    assert nesting('{"a":' * 100_000 + "1" + "}" * 100_000, MAX_DEPTH) == MAX_DEPTH + 1
    refused(b"[" * 2048, "nested more than 4 levels")  # 2 KB of `[`: the reported message
    refused(b"[" * 1000, "nested more than 4 levels")
    refused(b'{"command":' * 300, "nested more than 4 levels")
    refused(b"[" * 100_000, "payload of 100000 bytes refused")  # the size cap comes first
    refused(b"[[[[1]]]]", "a command is a JSON object, not an array")


def test_brackets_inside_strings_do_not_count():
    assert decode(b'{"command": "ack", "alert": "[[[[[[{{{{{{\\"[[[["}') == {
        "command": "ack",
        "alert": '[[[[[[{{{{{{"[[[[',
    }
    assert nesting(r'{"a": "\\", "b": [[[[[1]]]]]}', 10) == 6  # an escaped backslash ends the string


@given(
    st.recursive(
        st.none() | st.integers() | st.text(alphabet='[]{}"\\ax', max_size=6),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text('[]{}"\\', max_size=3), inner, max_size=3),
        max_leaves=20,
    )
)
def test_nesting_agrees_with_the_json_structure(value):
    def depth(v):
        children = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
        return 0 if children is None else 1 + max((depth(c) for c in children), default=0)

    assert nesting(json.dumps(value), 100) == depth(value)


def test_invalid_utf8_huge_and_odd_payloads_are_refused_with_a_reason():
    refused(b'{"command": "ack", "alert": "\xff"}', r"not UTF-8: invalid start byte \(byte 0xff at offset 29\)")
    refused(b"\xed\xa0\x80", "not UTF-8")  # an encoded surrogate
    refused(b"\xc3", "not UTF-8: unexpected end of data")
    refused(b"x" * (MAX_PAYLOAD_BYTES + 1), f"payload of {MAX_PAYLOAD_BYTES + 1} bytes refused")
    refused(json.dumps({"command": "ack", "alert": "x" * 10**6}).encode(), "bytes refused")
    refused(b"", "empty payload")
    refused(b"  \n", "empty payload")
    refused(b"{not json", "not JSON: Expecting property name")
    refused(b'"ack"', "not a string")
    refused(b"null", "not null")
    refused(b"NaN", "not a number")
    refused(b'{"command": "ack", "command": "label"}', "key 'command' appears twice")
    refused("\ufeff{}".encode(), "not JSON: Unexpected UTF-8 BOM")


@settings(max_examples=300)
@given(
    st.binary(max_size=MAX_PAYLOAD_BYTES + 50)
    | st.text(max_size=3000).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_any_bytes_decode_or_raise_command_error(payload):
    try:
        data = decode(payload)
    except CommandError:
        return
    assert isinstance(data, dict)
    try:
        validate_any(data, "g", ["pump-1"])
    except CommandError:
        pass


def test_huge_strings_within_the_cap_fail_validation_by_name():
    with pytest.raises(CommandError, match="alert: String should have at most 200 characters"):
        validate_any(decode(json.dumps({"command": "ack", "alert": "x" * 4000}).encode()), "g", [])
    with pytest.raises(CommandError, match="operator: control characters are not allowed"):
        validate_any({"command": "ack", "alert": "a", "operator": "ana\nFAKE LOG LINE"}, "g", [])


def test_the_largest_valid_signed_command_fits_under_the_cap_twice():
    for char in ("\U0001f600", '"', "\\"):  # 4 UTF-8 bytes; and the characters escaped twice
        command = {"command": "label", "alert": char * 200, "label": "false", "operator": char * 100}
        validate_any(command, "g", [])
        payload = sign(command, SECRET, "g" * 64)
        assert len(payload) < MAX_PAYLOAD_BYTES / 2, len(payload)
        assert decode(payload)


def test_unknown_keys_and_commands_are_named():
    with pytest.raises(CommandError, match="zz: unknown key"):
        validate_any({**ACK, "zz": 1}, "g", [])
    with pytest.raises(CommandError, match=r"command: should be 'ack', 'label' or 'missed' \(got 'delete'\)"):
        validate_any({"command": "delete"}, "g", [])
    with pytest.raises(CommandError, match="a command is a JSON object"):
        validate_any([1], "g", [])


def test_missed_needs_a_configured_device_and_a_time(tmp_path):
    missed = validate_any({"command": "missed", "device": "pump-1", "at": "2026-11-24T08:15"}, "g", ["pump-1"])
    assert missed == Missed("g:pump-1:missed:1795508100000", "pump-1", 1795508100000, None)
    assert validate_any({"command": "missed", "device": "pump-1", "at": 5}, "g", ["pump-1"]).at_ms == 5
    for bad, why in (
        ({"device": "pump-9", "at": 1}, "no device 'pump-9' in this gateway's configuration"),
        ({"device": "pump-1"}, "at: Field required"),
        ({"device": "pump-1", "at": "soon"}, "neither an ISO 8601 time nor milliseconds"),
        ({"device": "pump-1", "at": True}, "milliseconds since the epoch or an ISO 8601 time expected"),
        ({"device": "pump-1", "at": -1}, "not a time after 1970"),
        ({"device": "pump-1", "at": 1, "alert": "x"}, "alert: unknown key"),
    ):
        with pytest.raises(CommandError, match=why):
            validate_any({"command": "missed", **bad}, "g", ["pump-1"])
    store = Store(tmp_path / "s.sqlite3")
    assert (
        commands.apply(store, missed) == "missed anomaly on pump-1 at 2026-11-24T08:15:00.000Z recorded "
        "(g:pump-1:missed:1795508100000)"
    )
    assert "already recorded" in commands.apply(store, missed)  # a repeat is harmless
    assert store.alerts(5)[0]["label"] == "missed"
    store.close()


# -- authorisation ---------------------------------------------------------------------------


def test_unsigned_commands_are_refused_unless_the_site_says_otherwise():
    clocks = Clocks()
    with pytest.raises(CommandError) as refusal:
        authoriser(clocks).authorise(dict(ACK))
    assert "mqtt.command_secret_file" in str(refusal.value) and "mqtt.accept_unauthenticated_commands = true" in str(
        refusal.value
    )
    with pytest.raises(CommandError, match="accept_unauthenticated_commands"):
        authoriser(clocks, secret=None).authorise(dict(ACK))
    assert authoriser(clocks, secret=None, unsigned=True).authorise(dict(ACK)) == ACK
    assert authoriser(clocks, unsigned=True).authorise(dict(ACK)) == ACK  # both: signed ones are checked too
    with pytest.raises(CommandError, match="wrong signature"):
        authoriser(clocks, unsigned=True).authorise(signed(ACK, clocks, secret=b"another-secret-0123456"))


def test_a_signed_command_is_accepted_once():
    clocks = Clocks()
    auth = authoriser(clocks)
    clocks.advance(1)
    command = signed(ACK, clocks, nonce="n" * 16)
    assert auth.authorise(dict(command)) == ACK
    with pytest.raises(CommandError, match="a replay"):
        auth.authorise(dict(command))
    clocks.advance(WINDOW_S * 3)
    with pytest.raises(CommandError, match="sign it again"):  # stale by now
        auth.authorise(dict(command))
    assert auth.authorise(signed(ACK, clocks)) == ACK
    assert len(auth.nonces) == 1  # the old nonce is forgotten: it could not pass the time check any more


def test_wrong_signatures_are_refused():
    clocks = Clocks()
    auth = authoriser(clocks)
    clocks.advance(1)
    good = signed(ACK, clocks)
    for envelope, why in (
        ({**good, "hmac": ("1" if good["hmac"][0] == "0" else "0") + good["hmac"][1:]}, "wrong signature"),
        ({**good, "signed": good["signed"] + " "}, "wrong signature"),
        ({**good, "signed": good["signed"].replace('"ack"', '"label"')}, "wrong signature"),
        (signed(ACK, clocks, secret=b"another-secret-0123456"), "wrong signature"),
        ({**good, "hmac": good["hmac"][:-1]}, "64 hexadecimal characters"),
        ({**good, "hmac": [good["hmac"]]}, "64 hexadecimal characters"),
        ({**good, "signed": {"command": "ack"}}, "signed: the command's JSON text"),
        ({**good, "operator": "eve"}, "unknown key.*operator"),
        ({"signed": '{"a": "\\ud800"}', "hmac": "0" * 64}, "wrong signature"),  # a lone surrogate: no exception
    ):
        with pytest.raises(CommandError, match=why):
            auth.authorise(envelope)
    assert auth.nonces == {}


def test_upper_case_hex_is_the_same_signature():
    clocks = Clocks()
    auth = authoriser(clocks)
    clocks.advance(1)
    command = signed(ACK, clocks)
    assert auth.authorise({**command, "hmac": command["hmac"].upper()}) == ACK


def test_signed_content_is_checked_after_the_signature():
    clocks = Clocks()
    auth = authoriser(clocks)
    clocks.advance(1)

    def envelope(inner):
        text = json.dumps(inner)
        return {"signed": text, "hmac": mac(SECRET, text)}

    base = {**ACK, "gateway": "g", "ts_ms": clocks.wall, "nonce": "x" * 16}
    for inner, why in (
        ({k: v for k, v in base.items() if k != "nonce"}, "nonce missing"),
        ({**base, "gateway": "other"}, "signed for gateway 'other', this is 'g'"),
        ({**base, "ts_ms": "now"}, "ts_ms must be UTC milliseconds"),
        ({**base, "ts_ms": True}, "ts_ms must be UTC milliseconds"),
        ({**base, "nonce": "short"}, "nonce must be 16 to 64 characters"),
        ({**base, "nonce": "x" * 15 + "\n"}, "nonce must be"),
    ):
        with pytest.raises(CommandError, match=why):
            auth.authorise(envelope(inner))
    with pytest.raises(CommandError, match="nested more than"):
        auth.authorise({"signed": "[" * 3000, "hmac": mac(SECRET, "[" * 3000)})


def test_the_time_window_and_the_start_of_the_gateway():
    clocks = Clocks()
    auth = authoriser(clocks)
    clocks.advance(60)
    with pytest.raises(CommandError, match=r"before this gateway started"):  # sent before a restart, replayed after
        auth.authorise(signed(ACK, at_ms=NOW - 1000))
    with pytest.raises(CommandError, match=rf"{WINDOW_S + 1} s apart \(at most {WINDOW_S} s\)"):
        auth.authorise(signed(ACK, at_ms=clocks.wall + (WINDOW_S + 1) * 1000))  # from the future
    assert auth.authorise(signed(ACK, at_ms=clocks.wall + (WINDOW_S - 1) * 1000)) == ACK  # a fast signer's clock
    assert auth.authorise(signed(ACK, at_ms=NOW + 1)) == ACK  # 59 s old
    clocks.advance(WINDOW_S)
    with pytest.raises(CommandError, match="this gateway's clock says .* s apart"):
        auth.authorise(signed(ACK, at_ms=NOW + 2))


def test_a_gateway_that_booted_with_a_wrong_clock():
    """A Pi without RTC starts in the past; signed commands are refused, saying so, until NTP
    sets the clock. Then they are accepted, and ones signed before the start still are not."""
    clocks = Clocks()
    clocks.wall = 1_700_000_000_000  # months behind the operator's clock (NOW)
    auth = authoriser(clocks)
    clocks.advance(30)
    with pytest.raises(CommandError, match="if the gateway's clock is wrong, set it"):
        auth.authorise(signed(ACK, at_ms=NOW + 30_000))
    clocks.advance(10, wall_step_s=(NOW - 1_700_000_000_000) / 1000)  # NTP steps the clock to the truth
    assert auth.authorise(signed(ACK, at_ms=clocks.wall)) == ACK
    with pytest.raises(CommandError, match="before this gateway started"):
        auth.authorise(signed(ACK, at_ms=clocks.wall - 41_000))  # the start, on the corrected clock


def test_nonces_are_bounded():
    clocks = Clocks()
    auth = authoriser(clocks)
    clocks.advance(1)
    auth.nonces = {f"{i:016d}": (clocks.wall, clocks.mono) for i in range(command_auth.NONCES)}
    with pytest.raises(CommandError, match="more than 10000 signed commands"):
        auth.authorise(signed(ACK, clocks))
    clocks.advance(2 * WINDOW_S + 1)
    assert auth.authorise(signed(ACK, clocks)) == ACK and len(auth.nonces) == 1


def test_a_signed_command_without_a_secret_here():
    clocks = Clocks()
    auth = Authoriser(
        "g", None, True, secret_problem="/etc/x: No such file", wall_ms=clocks.wall_ms, monotonic=clocks.monotonic
    )
    with pytest.raises(CommandError, match=r"no usable mqtt.command_secret_file \(/etc/x: No such file\)"):
        auth.authorise(signed(ACK, clocks))


def test_sign_refuses_the_keys_it_adds():
    with pytest.raises(ValueError, match="must not hold nonce"):
        sign({**ACK, "nonce": "x"}, SECRET, "g")


# -- the handler ------------------------------------------------------------------------------


def site_config(tmp_path, mqtt=""):
    return parse_config(
        f'[gateway]\nname = "g"\nstate_dir = "{tmp_path}"\n[mqtt]\nhost = "h"\n{mqtt}\n'
        '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\n'
    )


class Fakes:
    def __init__(self):
        self.applied = []
        self.dead = []
        self.apply_error = None
        self.store_error = None

    async def apply(self, command):
        if self.apply_error:
            raise self.apply_error
        self.applied.append(command)
        return f"done: {command.command if hasattr(command, 'command') else command.device}"

    async def dead_letter(self, *args):
        if self.store_error:
            raise self.store_error
        self.dead.append(args)


def topic(tmp_path, fakes, clocks, mqtt="accept_unauthenticated_commands = true", **kwargs):
    return CommandTopic(
        site_config(tmp_path, mqtt),
        fakes.apply,
        fakes.dead_letter,
        monotonic=clocks.monotonic,
        wall_ms=clocks.wall_ms,
        **kwargs,
    )


async def test_every_failure_is_one_result_and_one_dead_letter(tmp_path):
    fakes, clocks = Fakes(), Clocks()
    handler = topic(tmp_path, fakes, clocks)
    hostile = [
        b"[" * 1000,
        b"[" * 100_000,
        b"\xff\xfe",
        b"x" * 10_000,
        b"",
        b"[]",
        b'{"command": "reboot"}',
        b'{"command": "ack", "alert": "a", "zz": 1}',
        b'{"command": "missed", "device": "pump-9", "at": 1}',
    ]
    for payload in hostile:
        result = await handler.handle(payload)
        assert result.startswith("error: "), result
    assert [d[0] for d in fakes.dead] == ["mqtt-command"] * len(hostile) and not fakes.applied
    assert all(len(d[2]) <= DEAD_LETTER_BYTES for d in fakes.dead) and fakes.dead[1][2] == b"[" * DEAD_LETTER_BYTES
    assert await handler.handle(json.dumps(ACK).encode()) == "done: ack"
    assert await handler.handle(b'{"command": "missed", "device": "pump-1", "at": 1}') == "done: pump-1"


async def test_retained_commands_are_refused(tmp_path):
    fakes, clocks = Fakes(), Clocks()
    result = await topic(tmp_path, fakes, clocks).handle(json.dumps(ACK).encode(), retain=True)
    assert result.startswith("error: refused: a retained command would be applied again at every reconnect")
    assert "mosquitto_pub -r -n" in result and not fakes.applied and len(fakes.dead) == 1


async def test_unsigned_refused_by_default_signed_accepted(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    fakes, clocks = Fakes(), Clocks()
    handler = topic(tmp_path, fakes, clocks, mqtt=f'command_secret_file = "{secret}"')
    assert "mqtt.accept_unauthenticated_commands = true" in await handler.handle(json.dumps(ACK).encode())
    clocks.advance(1)
    payload = sign(ACK, SECRET, "g", now_ms=clocks.wall)
    assert await handler.handle(payload) == "done: ack"
    assert (await handler.handle(payload)).startswith("error: refused: a replay")
    assert len(fakes.applied) == 1 and len(fakes.dead) == 2


async def test_nothing_is_accepted_without_configuration(tmp_path):
    fakes, clocks = Fakes(), Clocks()
    handler = topic(tmp_path, fakes, clocks, mqtt="")
    assert "refused: unsigned commands are not accepted" in await handler.handle(json.dumps(ACK).encode())
    assert "no usable mqtt.command_secret_file" in await handler.handle(sign(ACK, SECRET, "g", now_ms=clocks.wall))
    assert not fakes.applied


async def test_an_unreadable_secret_refuses_signed_commands_but_does_not_stop_the_start(tmp_path, caplog):
    fakes, clocks = Fakes(), Clocks()
    with caplog.at_level(logging.ERROR):
        handler = topic(tmp_path, fakes, clocks, mqtt=f'command_secret_file = "{tmp_path / "gone"}"')
    assert "mqtt.command_secret_file unusable" in caplog.text
    result = await handler.handle(sign(ACK, SECRET, "g", now_ms=clocks.wall))
    assert "no usable mqtt.command_secret_file" in result and "No such file" in result


async def test_bugs_and_store_failures_are_contained(tmp_path, caplog, monkeypatch):
    fakes, clocks = Fakes(), Clocks()
    handler = topic(tmp_path, fakes, clocks)
    fakes.apply_error = TypeError("a bug")
    with caplog.at_level(logging.WARNING):
        result = await handler.handle(json.dumps(ACK).encode())
    assert result == "error: internal error (TypeError) while handling the command; see the gateway's log"
    assert any(r.exc_info and r.exc_info[0] is TypeError for r in caplog.records)  # the traceback is logged
    assert fakes.dead[-1][1] == "internal error: TypeError: a bug"

    fakes.apply_error = sqlite3.OperationalError("database or disk is full")
    result = await handler.handle(json.dumps(ACK).encode())
    assert result == "error: not applied: the store cannot take it now: database or disk is full"

    fakes.store_error = sqlite3.OperationalError("database or disk is full")  # dead letters fail too
    caplog.clear()
    assert (await handler.handle(b"[" * 1000)).startswith("error: JSON nested")
    assert "not dead-lettered: database or disk is full" in caplog.text

    fakes.store_error = None
    monkeypatch.setattr(
        "gatewayd.publishing.command_topic.decode", lambda payload: 1 / 0
    )  # a bug in the boundary itself
    assert "internal error (ZeroDivisionError)" in await handler.handle(b"{}")
    monkeypatch.setattr(
        "gatewayd.publishing.command_topic.decode", lambda payload: (_ for _ in ()).throw(RecursionError())
    )
    assert "internal error (RecursionError)" in await handler.handle(b"{}")


async def test_a_flood_is_counted_not_recorded(tmp_path, caplog):
    fakes, clocks = Fakes(), Clocks()
    handler = topic(tmp_path, fakes, clocks)
    with caplog.at_level(logging.WARNING, logger="gatewayd.publishing.command_topic"):
        for _ in range(RECORD_BURST + 50):
            assert (await handler.handle(b"[]")).startswith("error: ")  # every one is still answered
    assert len(fakes.dead) == RECORD_BURST and handler.unrecorded == 50 and handler.refused == RECORD_BURST + 50
    assert sum("flooded" in r.message for r in caplog.records) == 1
    clocks.advance(RECORD_EVERY_S)
    await handler.handle(b"[]")
    assert len(fakes.dead) == RECORD_BURST + 1


class FakeMessage:
    def __init__(self, payload, retain=False):
        self.payload, self.retain, self.topic = payload, retain, "gateway/g/command"


class FakeClient:
    def __init__(self, messages):
        self._messages = messages

    @property
    async def messages(self):
        for m in self._messages:
            yield m


async def test_the_command_loop_survives_a_handler_that_raises(tmp_path):
    seen = []

    async def on_command(payload, retain):
        seen.append((payload, retain))
        if payload == b"boom":
            raise RecursionError("from a bug")
        return "ok"

    async def no_store(*args):
        raise AssertionError("not used")

    pub = Publisher(site_config(tmp_path).mqtt, "g", no_store, on_command)
    await pub._commands(FakeClient([FakeMessage(b"boom"), FakeMessage(bytearray(b"next"), retain=True)]))
    assert seen == [(b"boom", False), (b"next", True)]
    results = [json.loads(pub.queue.get_nowait().payload)["result"] for _ in range(2)]
    assert results[0].startswith("error: internal error") and results[1] == "ok"


# -- configuration and the signing command ---------------------------------------------------


def write_site(tmp_path, secret_text="s" * 32, mode=0o600, extra=""):
    secret = tmp_path / "command-secret"
    secret.write_text(secret_text)
    os.chmod(secret, mode)
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nname = "plant-7"\nstate_dir = "{tmp_path}"\n\n[mqtt]\nhost = "h"\n'
        f'topic_prefix = "site"\ncommand_secret_file = "{secret}"\n{extra}\n'
        '[[devices]]\nname = "pump-1"\nhost = "127.0.0.1"\n'
    )
    return config, secret


def test_command_keys_in_the_configuration(tmp_path):
    config, secret = write_site(tmp_path)
    loaded = load_config(config)
    assert loaded.mqtt.command_secret_file == str(secret) and loaded.mqtt.accept_unauthenticated_commands is False
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match=rf"gatewayd.toml:8: mqtt.command_secret_file: {secret} is world-readable"):
        load_config(config)
    write_site(tmp_path, secret_text="short\n")
    with pytest.raises(ConfigError, match="mqtt.command_secret_file: .* holds 5 characters, at least 16"):
        load_config(config)
    secret.unlink()
    with pytest.raises(ConfigError, match="mqtt.command_secret_file: cannot read .*No such file"):
        load_config(config)
    with pytest.raises(ConfigError, match="accept_unauthenticated_commands: Input should be a valid boolean"):
        parse_config(
            '[mqtt]\nhost = "h"\naccept_unauthenticated_commands = "yes"\n[[devices]]\nname = "a"\nhost = "b"\n'
        )


def test_gatewayd_command_sign_prints_a_payload_the_gateway_accepts(tmp_path, capsys):
    config, secret = write_site(tmp_path)
    auth = Authoriser("plant-7", command_auth.load_secret(secret), False)  # started before the commands are signed
    assert (
        main(
            [
                "command",
                "sign",
                "--config",
                str(config),
                '{"command": "label", "alert": "plant-7:pump-1:model:1", "label": "false", "operator": "ana"}',
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert out.endswith("\n") and "publish it on site/plant-7/command within 300 s, once, without retain" in err
    assert auth.authorise(decode(out.encode())) == {
        "command": "label",
        "alert": "plant-7:pump-1:model:1",
        "label": "false",
        "operator": "ana",
    }
    # without the configuration (an operator's laptop): the secret and the gateway's name
    assert (
        main(
            [
                "command",
                "sign",
                "--secret-file",
                str(secret),
                "--gateway",
                "plant-7",
                "--config",
                "/nonexistent",
                '{"command": "missed", "device": "pump-4", "at": "2026-11-24T08:15"}',
            ]
        )
        == 0
    )
    assert auth.authorise(decode(capsys.readouterr().out.encode()))["device"] == "pump-4"


@pytest.mark.parametrize(
    "command, why",
    [
        ('{"command": "ack"}', "alert: Field required"),
        ('{"command": "missed", "device": "pump-9", "at": 1}', "no device 'pump-9'"),
        ('{"command": "ack", "alert": "a", "nonce": "x"}', "nonce: unknown key"),
        ("[" * 10, "nested more than"),
        ("ack it", "not JSON"),
    ],
)
def test_gatewayd_command_sign_checks_the_command_first(tmp_path, capsys, command, why):
    config, _ = write_site(tmp_path)
    assert main(["command", "sign", "--config", str(config), command]) == 2
    out, err = capsys.readouterr()
    assert out == "" and why in err


def test_gatewayd_command_sign_needs_a_secret(tmp_path, capsys):
    config = tmp_path / "gatewayd.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[mqtt]\nhost = "h"\n[[devices]]\nname = "a"\nhost = "b"\n')
    assert main(["command", "sign", "--config", str(config), json.dumps(ACK)]) == 2
    assert "sets no mqtt.command_secret_file; give --secret-file" in capsys.readouterr().err


def test_alert_missed_validates_as_the_mqtt_command(tmp_path, capsys):
    config, _ = write_site(tmp_path)
    Store.in_state_dir(tmp_path).close()
    assert main(["alert", "missed", "pump-9", "--at", "2026-11-24T08:15", "--config", str(config)]) == 2
    assert "no device 'pump-9'" in capsys.readouterr().err
    assert main(["alert", "missed", "pump-1", "--at", "2026-11-24T08:15", "--config", str(config)]) == 0
    assert main(["alert", "missed", "pump-1", "--at", "2026-11-24T08:15", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "recorded (plant-7:pump-1:missed:1795508100000)" in out and "already recorded" in out
