"""The secret that keys an index's identifier hashes, kept outside the index.

Study, series and instance UIDs and patient IDs are stored only as HMAC-SHA256 hashes. A hash is
as strong as the secret that keys it: an 8-digit patient ID has only 10^8 values, so whoever holds
the secret recovers it in minutes. The index therefore never holds the secret. The catalog and the
back end's record hold only which key (``key.id``, random) and a check value (``key.check``, an
HMAC of a fixed text) that tells the right key from a wrong one; the secret is read from

1. ``$RADSEARCH_KEY`` (the secret itself, at least 32 characters), else
2. ``$RADSEARCH_KEY_FILE`` (a file holding it), else
3. ``KEY_DIR/KEY_ID``, written with owner-only permissions when an index is created; ``KEY_DIR`` is
   ``$RADSEARCH_KEY_DIR``, else ``~/.radsearch/keys``.

Machines that fill one Qdrant cluster must hash with the same secret: the first one creates it;
copy its key file to the others (same path, mode 600) or point ``$RADSEARCH_KEY_FILE`` at a copy
on each. A machine without it is refused in one line that says so. An index made when the secret
(then called the salt) was kept in the catalog moves it to a key file on its next ``index`` run and
removes it from the catalog and the back end's record; until then it is read from the catalog.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path

from radsearch.errors import RadsearchError

KEY_ID = "key.id"
KEY_CHECK = "key.check"
LEGACY_SALT = "salt"  # where indexes made before kept the secret, in the catalog and the record
_MIN_LENGTH = 32
_CHECK_TEXT = b"radsearch key check"


class HashKeyError(RadsearchError):
    """The secret that keys an index's hashes is missing, unsafe or not the index's."""


def key_folder() -> Path:
    """``$RADSEARCH_KEY_DIR``, else ``~/.radsearch/keys``."""
    configured = os.environ.get("RADSEARCH_KEY_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".radsearch" / "keys"


def check_value(secret: str) -> str:
    """A value that tells whether ``secret`` is an index's key without revealing it."""
    return hmac.new(secret.encode("utf-8"), _CHECK_TEXT, hashlib.sha256).hexdigest()[:32]


def create_key() -> dict[str, str]:
    """The key of a new index: the environment's secret when one is given, else a new random one
    in a key file. Returns what the index records of it (id and check value, no secret)."""
    key_id = uuid.uuid4().hex
    secret = _environment_secret()
    if secret is None:
        secret = secrets.token_hex(32)
        _write_key_file(key_id, secret)
    return {KEY_ID: key_id, KEY_CHECK: check_value(secret)}


def move_legacy_salt(meta: Mapping[str, str]) -> dict[str, str] | None:
    """For an index whose secret is still in its record (``salt``): write it to a key file and
    return the record's new key entries (the caller deletes the salt); None for any other index."""
    salt = meta.get(LEGACY_SALT)
    if salt is None or KEY_ID in meta:
        return None
    key_id = uuid.uuid4().hex
    _write_key_file(key_id, salt)
    return {KEY_ID: key_id, KEY_CHECK: check_value(salt)}


def adopt_key_file(meta: Mapping[str, str], secret: str) -> None:
    """Keep ``secret`` (a record's legacy salt, checked against ``meta``) as the key file of
    ``meta``'s key, on a machine that has none yet."""
    if check_value(secret) != meta.get(KEY_CHECK):
        raise HashKeyError("the salt found is not the key this index records")
    path = key_folder() / meta[KEY_ID]
    if not path.exists():
        _write_key_file(meta[KEY_ID], secret)


def discard_key_file(meta: Mapping[str, str]) -> None:
    """Delete the key file of ``meta``'s key (an index that hashed nothing with it)."""
    if meta.get(KEY_ID):
        (key_folder() / meta[KEY_ID]).unlink(missing_ok=True)


def hash_key(meta: Mapping[str, str], where: str) -> str:
    """The secret that keys the hashes of the index whose record is ``meta`` (``where`` names it
    in errors). Raises HashKeyError, in one line that says what to do, when it is not here."""
    if KEY_ID not in meta:
        if LEGACY_SALT in meta:
            return meta[LEGACY_SALT]  # an older index, until its next `index` run moves it out
        raise HashKeyError(f"{where}: this index records no key for its hashes")
    expected = meta.get(KEY_CHECK)
    secret = _environment_secret()
    if secret is not None:
        if check_value(secret) != expected:
            raise HashKeyError(
                f"{where}: the key in $RADSEARCH_KEY / $RADSEARCH_KEY_FILE is not the key of this "
                "index's hashes: unset it, or set the key the index was made with")
        return secret
    path = key_folder() / meta[KEY_ID]
    try:
        secret = _read_key_file(path)
    except FileNotFoundError:
        raise HashKeyError(
            f"{where}: the key of this index's hashes ({meta[KEY_ID]}) is not on this machine: "
            f"copy {path} from the machine that made the index (mode 600), or set "
            "RADSEARCH_KEY_FILE to a copy of it") from None
    if check_value(secret) != expected:
        raise HashKeyError(f"{where}: {path} is not the key of this index's hashes")
    return secret


def _environment_secret() -> str | None:
    secret = os.environ.get("RADSEARCH_KEY")
    origin = "$RADSEARCH_KEY"
    if not secret:
        file = os.environ.get("RADSEARCH_KEY_FILE")
        if not file:
            return None
        origin = file
        try:
            secret = _read_key_file(Path(file).expanduser())
        except FileNotFoundError:
            raise HashKeyError(f"$RADSEARCH_KEY_FILE: {file} does not exist") from None
    secret = secret.strip()
    if len(secret) < _MIN_LENGTH:
        raise HashKeyError(
            f"{origin}: a key needs at least {_MIN_LENGTH} characters of random text "
            "(python -c 'import secrets; print(secrets.token_hex(32))')")
    return secret


def _read_key_file(path: Path) -> str:
    """A key file's secret; one that others may read is refused (like ssh's private keys)."""
    try:
        mode = path.stat().st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise HashKeyError(f"{path}: others may read this key file: chmod 600 {path}")
        return path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, HashKeyError):
        raise
    except OSError as error:
        raise HashKeyError(f"{path}: cannot read the key file: {error.strerror or error}") from None


def _write_key_file(key_id: str, secret: str) -> Path:
    """A new key file, owner-only from its creation (never world-readable, even for a moment)."""
    folder = key_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / key_id
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        reason = error.strerror or error
        raise HashKeyError(f"{path}: cannot write the key file: {reason}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path
