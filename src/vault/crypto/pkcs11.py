"""The master key on an HSM, over PKCS#11 (python-pkcs11; SoftHSM2 in the tests).

The master key is an AES-256 key generated on the token as sensitive and
non-extractable: its value never leaves the HSM. Wrap and unwrap are CKM_AES_GCM
encrypt/decrypt done by the token, with the label (what the wrapped key is for) as AAD,
the same construction as the key file: ``nonce (12) || ciphertext || tag (16)``.
CKM_AES_GCM rather than CKM_AES_KEY_WRAP_PAD: SoftHSM2 and python-pkcs11 both support
it, and it binds the label, so a wrapped key copied into another row fails to unwrap.

Errors are one fixed sentence with a reason (HSM_UNAVAILABLE, HSM_TOKEN_MISSING,
HSM_PIN_INCORRECT, HSM_KEY_MISSING, ...): never the PIN, never the library's own text
(which may quote attributes).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from vault.errors import DecryptionError, FailedPreconditionError, UnavailableError
from vault.secrets import SecretBytes

__all__ = ["Pkcs11Kek", "Pkcs11Settings"]

_NONCE_BYTES = 12
# The HSM, not the wrapped key, is the problem: unavailable, never "decryption failed".
_HSM_GONE = (
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.DeviceMemory,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
)
_TAG_BITS = 128
_KEY_BITS = 256

# One loaded library per path and process: C_Initialize runs once, and every provider
# of the process shares it (a second C_Initialize would be refused by the module).
_LIBRARIES: dict[str, Any] = {}
_LIBRARIES_LOCK = threading.Lock()
# (module, token) -> keyed digest of the PIN that logged this process in (see below).
_LOGINS: dict[tuple[str, str], bytes] = {}
_PIN_DIGEST_KEY = os.urandom(32)


def _pin_digest(pin: SecretBytes) -> bytes:
    return hmac.new(_PIN_DIGEST_KEY, pin.reveal(), hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    module: str  # path of the PKCS#11 library (.so)
    token_label: str  # the token holding the master key
    key_label: str  # the AES key's label on the token

    def __repr__(self) -> str:
        return f"Pkcs11Settings(token={self.token_label!r}, key={self.key_label!r})"

    @property
    def kek_id(self) -> str:
        return f"pkcs11:{self.token_label}/{self.key_label}"


def _library(module: str) -> Any:
    with _LIBRARIES_LOCK:
        lib = _LIBRARIES.get(module)
        if lib is None:
            if not module or not Path(module).is_file():
                raise FailedPreconditionError(
                    "the PKCS#11 module (pkcs11_module) cannot be found",
                    reason="HSM_UNAVAILABLE",
                )
            try:
                lib = pkcs11.lib(module)
            except p11.PKCS11Error:
                raise FailedPreconditionError(
                    "the PKCS#11 module (pkcs11_module) cannot be loaded",
                    reason="HSM_UNAVAILABLE",
                ) from None
            _LIBRARIES[module] = lib
        return lib


def _open_session(settings: Pkcs11Settings, pin: SecretBytes, *, rw: bool) -> Any:
    lib = _library(settings.module)
    try:
        token = lib.get_token(token_label=settings.token_label)
    except (p11.NoSuchToken, p11.MultipleTokensReturned):
        raise FailedPreconditionError(
            "the HSM token (pkcs11_token_label) is not there", reason="HSM_TOKEN_MISSING"
        ) from None
    except p11.PKCS11Error:
        raise FailedPreconditionError("the HSM does not answer", reason="HSM_UNAVAILABLE") from None
    login = (settings.module, settings.token_label)
    try:
        session = token.open(rw=rw, user_pin=pin.reveal().decode("utf-8", "replace"))
    except p11.UserAlreadyLoggedIn:
        # PKCS#11 logs in per process, not per session: a second provider on the same
        # token (rotate-master between two HSM keys) joins the login, with the PIN the
        # first one proved, and no other.
        with _LIBRARIES_LOCK:
            proven = _LOGINS.get(login)
        if proven is None or not hmac.compare_digest(proven, _pin_digest(pin)):
            raise FailedPreconditionError(
                "the HSM refused the PIN", reason="HSM_PIN_INCORRECT"
            ) from None
        try:
            return token.open(rw=rw)
        except p11.PKCS11Error:
            raise FailedPreconditionError(
                "the HSM does not answer", reason="HSM_UNAVAILABLE"
            ) from None
    except (p11.PinIncorrect, p11.PinLenRange, p11.PinInvalid):
        raise FailedPreconditionError(
            "the HSM refused the PIN", reason="HSM_PIN_INCORRECT"
        ) from None
    except p11.PinLocked:
        raise FailedPreconditionError("the HSM PIN is locked", reason="HSM_PIN_LOCKED") from None
    except p11.PKCS11Error:
        raise FailedPreconditionError("the HSM does not answer", reason="HSM_UNAVAILABLE") from None
    with _LIBRARIES_LOCK:
        _LOGINS[login] = _pin_digest(pin)
    return session


def _find_key(session: Any, settings: Pkcs11Settings) -> Any:
    try:
        return session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=settings.key_label
        )
    except p11.NoSuchKey:
        raise FailedPreconditionError(
            "the master key (pkcs11_key_label) is not on the HSM token",
            reason="HSM_KEY_MISSING",
        ) from None
    except p11.MultipleObjectsReturned:
        raise FailedPreconditionError(
            "more than one key on the HSM token has the master key's label",
            reason="HSM_KEY_AMBIGUOUS",
        ) from None
    except p11.PKCS11Error:
        raise FailedPreconditionError("the HSM does not answer", reason="HSM_UNAVAILABLE") from None


class Pkcs11Kek:
    """A KekProvider whose key is on an HSM token; one logged-in session, serialised.

    A session the HSM drops (a restart, a network HSM reconnecting) is opened again, with
    a new login, at the next wrap or unwrap, so the vault follows the HSM back without a
    restart; only ``close`` ends it for good. The PIN stays in memory for that.
    """

    __slots__ = ("_closed", "_key", "_lock", "_pin", "_session", "_settings")

    def __init__(self, settings: Pkcs11Settings, session: Any, key: Any, pin: SecretBytes) -> None:
        self._settings = settings
        self._session = session
        self._key = key
        self._pin = pin
        self._closed = False
        # A PKCS#11 session runs one operation at a time.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Pkcs11Kek({self.kek_id})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Pkcs11Kek cannot be pickled")

    @property
    def kek_id(self) -> str:
        return self._settings.kek_id

    @classmethod
    def open(cls, settings: Pkcs11Settings, pin: SecretBytes, *, create: bool = False) -> Pkcs11Kek:
        """Log in to the token and find the master key; with ``create``, generate it on
        the token if it is not there yet (an existing key is used as it is)."""
        session = _open_session(settings, pin, rw=create)
        try:
            try:
                key = _find_key(session, settings)
            except FailedPreconditionError as exc:
                if not create or exc.reason != "HSM_KEY_MISSING":
                    raise
                key = cls._generate(session, settings)
        except BaseException:
            session.close()
            raise
        return cls(settings, session, key, pin)

    @staticmethod
    def _generate(session: Any, settings: Pkcs11Settings) -> Any:
        try:
            return session.generate_key(
                KeyType.AES,
                _KEY_BITS,
                label=settings.key_label,
                store=True,
                # Encrypt/decrypt only: it can neither be read out nor wrap other objects
                # out of the token.
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )
        except p11.PKCS11Error:
            raise FailedPreconditionError(
                "the HSM could not create the master key", reason="HSM_KEY_CREATE_FAILED"
            ) from None

    def close(self) -> None:
        with self._lock, contextlib.suppress(p11.PKCS11Error):
            self._closed = True
            self._session.close()

    def _run(self, op: Callable[[Any], Any]) -> Any:
        """``op(key)`` under the session lock. If the HSM dropped the session, log in
        again once and retry; PKCS#11 errors of the retry reach the caller's mapping."""
        with self._lock:
            if self._closed:
                raise UnavailableError("the HSM session is closed", reason="HSM_UNAVAILABLE")
            try:
                return op(self._key)
            except _HSM_GONE:
                pass
            try:
                session = _open_session(self._settings, self._pin, rw=False)
                key = _find_key(session, self._settings)
            except FailedPreconditionError:
                raise UnavailableError(
                    "the HSM does not answer", reason="HSM_UNAVAILABLE"
                ) from None
            with contextlib.suppress(p11.PKCS11Error):
                self._session.close()
            self._session, self._key = session, key
            return op(key)

    def wrap(self, key: SecretBytes, label: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        params = GCMParams(nonce, b"wrap\x00" + label, _TAG_BITS)
        try:
            sealed = self._run(
                lambda k: k.encrypt(
                    key.reveal(), mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except p11.PKCS11Error:
            raise UnavailableError(
                "the HSM could not wrap a key", reason="HSM_UNAVAILABLE"
            ) from None
        return nonce + bytes(sealed)

    def unwrap(self, wrapped: bytes, label: bytes) -> SecretBytes:
        if len(wrapped) <= _NONCE_BYTES + _TAG_BITS // 8:
            raise DecryptionError
        params = GCMParams(wrapped[:_NONCE_BYTES], b"wrap\x00" + label, _TAG_BITS)
        try:
            plain = self._run(
                lambda k: k.decrypt(
                    wrapped[_NONCE_BYTES:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except _HSM_GONE:
            raise UnavailableError(
                "the HSM could not unwrap a key", reason="HSM_UNAVAILABLE"
            ) from None
        except p11.PKCS11Error:
            # A bad tag (wrong key, wrong label, edited bytes): SoftHSM2 says
            # CKR_GENERAL_ERROR or CKR_ENCRYPTED_DATA_INVALID; either is a failed unwrap.
            raise DecryptionError from None
        return SecretBytes(bytes(plain))
