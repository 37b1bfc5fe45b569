"""CURVE encryption + client authentication on real sockets: an authorised client receives (and gets the
state), an unauthorised or plain-text client receives nothing."""

from __future__ import annotations

import time

import pytest
from _transport import make_publisher, status_header_fields
from neurospeech.service._curve import generate_keys, load_keypair, load_public_key
from neurospeech.service.client import Subscriber

from neurospeech.errors import TransportError


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    server_pub, server_sec = generate_keys(d, "server")
    good_pub, good_sec = generate_keys(d, "good")
    _, bad_sec = generate_keys(d, "intruder")
    auth = d / "authorized"
    auth.mkdir()
    (auth / "good.key").write_bytes(good_pub.read_bytes())
    return {"server_pub": server_pub, "server_sec": server_sec, "good_sec": good_sec, "bad_sec": bad_sec,
            "auth": auth, "dir": d}


def test_key_files(keys):
    pub, sec = load_keypair(keys["server_sec"])
    assert len(pub) == 40 and len(sec) == 40 and load_public_key(keys["server_pub"]) == pub
    assert (keys["server_sec"].stat().st_mode & 0o777) == 0o600
    with pytest.raises(TransportError, match="already exist"):
        generate_keys(keys["dir"], "server")
    with pytest.raises(TransportError, match="no secret key"):
        load_keypair(keys["server_pub"])
    with pytest.raises(TransportError, match="does not exist"):
        load_keypair(keys["dir"] / "missing.key_secret")


@pytest.mark.parametrize("authorized", ["folder", "file"])
def test_only_the_authorised_client_receives(keys, authorized):
    auth = keys["auth"] if authorized == "folder" else keys["auth"] / "good.key"
    with make_publisher(curve_secret_key=keys["server_sec"], curve_authorized_keys=auth,
                        state_endpoint="tcp://127.0.0.1:*") as pub:
        good = Subscriber(pub.endpoint, state_endpoint=pub.state_endpoint,
                          curve_secret_key=keys["good_sec"], curve_server_key=keys["server_pub"])
        intruder = Subscriber(pub.endpoint, state_endpoint=pub.state_endpoint,
                              curve_secret_key=keys["bad_sec"], curve_server_key=keys["server_pub"])
        plain = Subscriber(pub.endpoint)
        try:
            deadline = time.monotonic() + 10
            got = None
            while got is None:
                assert time.monotonic() < deadline, "authorised CURVE client never received"
                pub.publish("status", status_header_fields(state="running"))
                got = good.recv(timeout=0.05)
            assert got["state"] == "running"
            # keep publishing for a while: the others must get nothing
            end = time.monotonic() + 0.7
            while time.monotonic() < end:
                pub.publish("status", status_header_fields())
                assert intruder.recv(timeout=0.02) is None
                assert plain.recv(timeout=0.02) is None
            assert good.recv(timeout=1) is not None
            assert good.state(timeout=5)["status"]["state"] == "running"
            with pytest.raises(TransportError, match="no reply"):
                intruder.state(timeout=0.5)
        finally:
            for s in (good, intruder, plain):
                s.close()


def test_encryption_only_without_authorised_keys(keys):
    with make_publisher(curve_secret_key=keys["server_sec"]) as pub:
        with Subscriber(pub.endpoint, curve_secret_key=keys["bad_sec"],
                        curve_server_key=keys["server_pub"]) as s:
            deadline = time.monotonic() + 10
            while s.recv(timeout=0.05) is None:
                assert time.monotonic() < deadline
                pub.publish("status", status_header_fields())


def test_bad_key_paths_are_transport_errors(keys, tmp_path):
    with pytest.raises(TransportError, match="does not exist"):
        make_publisher(curve_secret_key=tmp_path / "nope.key_secret")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TransportError, match="no client public"):
        make_publisher(curve_secret_key=keys["server_sec"], curve_authorized_keys=empty)


def test_keys_command_writes_a_pair_and_never_overwrites(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "neurospeech", "keys", "--dir", str(tmp_path / "k"), "--name", "listener1"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    public = load_public_key(tmp_path / "k" / "listener1.key")
    assert public == load_keypair(tmp_path / "k" / "listener1.key_secret")[0]
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 7 and "already exist" in again.stderr
