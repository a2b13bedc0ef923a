"""Key and token files on disk: created with mode 0600, refused when others can read them.

A key file is JSON: ``{"type": "creditnet-ed25519", "public_key": hex, "seed": hex}``. The public
key is stored beside the seed so a damaged or hand-edited file is caught (the seed must derive it).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from protocol.crypto import SEED_BYTES, Identity

KEY_TYPE = "creditnet-ed25519"
MAX_KEY_FILE_BYTES = 4096


class KeyFileError(ValueError):
    """A key or token file that cannot be used; the message names the file and the reason."""


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never overwriting an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _read_private(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{path}: readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run 'chmod 600 {path}' and check who may have copied it"
        )
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: {st.st_size} bytes is too large for a key file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read: {exc}") from exc


def write_key(path: Path, identity: Identity) -> None:
    doc = {"type": KEY_TYPE, "public_key": identity.public_key.hex(), "seed": identity.seed.hex()}
    _write_private(path, json.dumps(doc, indent=2) + "\n")


def load_key(path: Path) -> Identity:
    """Load an identity; refuses files others can read, malformed files and mismatched keys."""
    text = _read_private(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"{path}: not a creditnet key file (invalid JSON: {exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("type") != KEY_TYPE:
        raise KeyFileError(f"{path}: not a creditnet key file (type must be {KEY_TYPE!r})")
    try:
        seed = bytes.fromhex(doc["seed"])
        public = bytes.fromhex(doc["public_key"])
    except (KeyError, TypeError, ValueError):
        raise KeyFileError(f"{path}: seed and public_key must be hexadecimal strings") from None
    if len(seed) != SEED_BYTES:
        raise KeyFileError(f"{path}: seed must be {SEED_BYTES} bytes")
    identity = Identity(seed)
    if identity.public_key != public:
        raise KeyFileError(f"{path}: public_key does not match the seed (file damaged?)")
    return identity


def write_token(path: Path) -> str:
    """Create a random operator token file (0600) and return the token."""
    token = secrets.token_hex(32)
    _write_private(path, token + "\n")
    return token


def load_token(path: Path) -> str:
    token = _read_private(path).strip()
    if len(token) < 32 or not all(c in "0123456789abcdef" for c in token):
        raise KeyFileError(f"{path}: not an operator token (expected 64 hex characters)")
    return token
