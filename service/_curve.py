"""Optional ZeroMQ CURVE encryption and client-key authentication (for subscribers on other machines).

Key generation (once; keep ``*.key_secret`` files private)::

    neurospeech keys --dir keys/ --name server     # -> keys/server.key, keys/server.key_secret
    neurospeech keys --dir keys/ --name listener1  # -> keys/listener1.key, keys/listener1.key_secret
    mkdir keys/authorized && cp keys/listener1.key keys/authorized/

(or ``python -c "import zmq.auth; zmq.auth.create_certificates('keys', 'server')"``). The service gets
``curve_secret_key=keys/server.key_secret`` and ``curve_authorized_keys=keys/authorized`` (a folder of client
*public* ``.key`` files; only those clients may connect); a client gets its own ``.key_secret`` file and the
server's public ``server.key``. Without ``curve_authorized_keys`` any CURVE client may connect (encryption
only). The files are ZeroMQ's certificate format (``zmq.auth``), Z85 text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import TransportError

__all__ = [
    "apply_client", "apply_server", "generate_keys", "load_keypair", "load_public_key", "start_authenticator",
]

log = logging.getLogger(__name__)


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Create a CURVE key pair ``<dir>/<name>.key`` (public) and ``<dir>/<name>.key_secret``.

    Raises
    ------
    TransportError
        If the files exist already (never overwrites a key) or cannot be written.
    """
    d = Path(directory)
    if not name or "/" in name or "\\" in name:
        raise TransportError(f"key name {name!r} must be a plain file name (e.g. 'server')")
    pub, sec = d / f"{name}.key", d / f"{name}.key_secret"
    if pub.exists() or sec.exists():
        raise TransportError(
            f"key files {pub} / {sec} already exist; pick another --name or delete them first"
        )
    try:
        d.mkdir(parents=True, exist_ok=True)
        p, s = zmq.auth.create_certificates(str(d), name)
        Path(s).chmod(0o600)
    except OSError as exc:
        raise TransportError(f"cannot write key files in {str(d)!r}: {exc}") from exc
    return Path(p), Path(s)


def load_keypair(secret_path: str | Path) -> tuple[bytes, bytes]:
    """Read ``(public, secret)`` Z85 keys from a ``.key_secret`` certificate file."""
    p = Path(secret_path)
    if not p.is_file():
        raise TransportError(
            f"CURVE secret key file {str(p)!r} does not exist; create one with `neurospeech keys`"
        )
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read CURVE key file {str(p)!r}: {exc}") from exc
    if not secret:
        raise TransportError(
            f"{str(p)!r} holds no secret key (is it the public .key file?); pass the .key_secret file"
        )
    return public, secret


def load_public_key(path: str | Path) -> bytes:
    """Read the public Z85 key from a ``.key`` (or ``.key_secret``) certificate file."""
    p = Path(path)
    if not p.is_file():
        raise TransportError(
            f"CURVE public key file {str(p)!r} does not exist; copy the server's .key file here"
        )
    try:
        public, _ = zmq.auth.load_certificate(str(p))
    except (OSError, ValueError) as exc:
        raise TransportError(f"cannot read CURVE key file {str(p)!r}: {exc}") from exc
    return public


def start_authenticator(ctx: zmq.Context, authorized_keys: str | Path | None) -> ThreadAuthenticator:
    """Start a ZAP authenticator on ``ctx``: only clients whose public key is in ``authorized_keys`` (a folder
    of ``.key`` files, or one such file) pass; ``None`` lets any CURVE client in (encryption only)."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
    auth.start()
    if authorized_keys is None:
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        return auth
    p = Path(authorized_keys)
    if p.is_file():
        keys = {load_public_key(p): True}
        auth.configure_curve_callback(domain="*", credentials_provider=_FixedKeys(keys))
    elif p.is_dir():
        if not any(p.glob("*.key")):
            auth.stop()
            raise TransportError(
                f"authorised-keys folder {str(p)!r} holds no client public .key files; copy the "
                "clients' .key files there (never their .key_secret files)"
            )
        auth.configure_curve(domain="*", location=str(p))
    else:
        auth.stop()
        raise TransportError(
            f"authorised-keys path {str(p)!r} does not exist (expected a folder of .key files)"
        )
    return auth


class _FixedKeys:
    def __init__(self, keys: dict[bytes, bool]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def apply_server(sock: zmq.Socket, secret_path: str | Path) -> None:
    """Make ``sock`` a CURVE server with the key pair in ``secret_path`` (call before bind)."""
    public, secret = load_keypair(secret_path)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def apply_client(sock: zmq.Socket, secret_path: str | Path, server_public_path: str | Path) -> None:
    """Make ``sock`` a CURVE client with its key pair and the server's public key (call before connect)."""
    public, secret = load_keypair(secret_path)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = load_public_key(server_public_path)
