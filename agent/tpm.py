"""The truck's TPM, through tpm2-pytss (ESAPI): EK, attestation key, identity key.

The only module that touches tpm2-pytss. It ships no `py.typed`; pyproject tells mypy to read its
inline annotations anyway. Every method here converts results to `bytes`/`int` at the boundary, so
callers see precise types.

Keys are created under the EK (a restricted decrypt key, so a storage parent) and kept as blobs
(`KeyBlob`); each operation loads what it needs, and flushes every transient object and session
it made before returning, also on error: swtpm (and a bare /dev/tpm0) has no resource manager.

EK authorization: the EK's own policy, rebuilt in a policy session per use: PolicySecret(TPM_RH_
ENDORSEMENT) — TCG PolicyA, the low-range (L-1) templates — followed by PolicyOR(PolicyA, PolicyC)
when the EK carries PolicyB, as the high-range templates (H-3, swtpm's ECC P-384 EK) do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import tpm2_pytss.constants as _c
import tpm2_pytss.types as _t
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss.ESAPI import ESAPI

from agent.signer import TpmEcdsaKey
from agent.state import EkKind, KeyBlob

AkAlgorithm = Literal["ecc-p256", "rsa-2048"]

EK_HANDLES: dict[EkKind, int] = {"rsa": 0x81010001, "ecc": 0x81010016}
EK_CERT_NV_INDICES: dict[EkKind, int] = {"rsa": 0x01C00002, "ecc": 0x01C00016}

_TPM_CC_POLICY_SECRET = 0x00000151
_TPM_CC_POLICY_OR = 0x00000171
_TPM_RH_ENDORSEMENT = 0x4000000B
# TCG EK Credential Profile 2.5, PolicyC = PolicyAuthorizeNV(0x01c07f01 / 0x01c07f02).
_POLICY_C = {
    "sha256": bytes.fromhex("3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde"),
    "sha384": bytes.fromhex(
        "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165"
    ),
}


class TpmError(RuntimeError):
    """The TPM refused or the agent cannot use what the TPM holds (e.g. an EK policy it does not know)."""


def _policy_a(hash_name: str) -> bytes:
    """PolicyA: the digest of TPM2_PolicySecret(TPM_RH_ENDORSEMENT) with an empty policyRef."""
    size = hashlib.new(hash_name).digest_size
    step = hashlib.new(
        hash_name,
        bytes(size) + _TPM_CC_POLICY_SECRET.to_bytes(4, "big") + _TPM_RH_ENDORSEMENT.to_bytes(4, "big"),
    ).digest()
    return hashlib.new(hash_name, step).digest()


def _policy_b(hash_name: str) -> bytes:
    """PolicyB: PolicyOR(PolicyA, PolicyC)."""
    size = hashlib.new(hash_name).digest_size
    data = bytes(size) + _TPM_CC_POLICY_OR.to_bytes(4, "big") + _policy_a(hash_name) + _POLICY_C[hash_name]
    return hashlib.new(hash_name, data).digest()


KeyAlgorithm = Literal["ecc-p256", "ecc-p384", "rsa-1024", "rsa-2048"]
NameAlg = Literal["sha256", "sha1"]

_NAME_ALGS: dict[NameAlg, int] = {"sha256": int(_c.TPM2_ALG.SHA256), "sha1": int(_c.TPM2_ALG.SHA1)}
_CURVES: dict[KeyAlgorithm, int] = {
    "ecc-p256": int(_c.TPM2_ECC.NIST_P256),
    "ecc-p384": int(_c.TPM2_ECC.NIST_P384),
}
_RSA_BITS: dict[KeyAlgorithm, int] = {"rsa-1024": 1024, "rsa-2048": 2048}


@dataclass(frozen=True)
class KeySpec:
    """What TPM2_Create is asked to make under the EK; the TPM, not this class, decides what it accepts.

    The defaults are the attestation key. `attestation_key()` and `identity_key()` are the two specs
    the agent uses; every other combination exists so tests can make real keys the authority must
    refuse (an AK that is not restricted, can decrypt, is weak, has a SHA-1 name, ...).

    scheme_pinned: the key carries its scheme (ECDSA or RSASSA for a signing key, ECDH or OAEP for a
    decrypt-only key; SHA-384 on P-384, SHA-256 otherwise); False leaves it TPM_ALG_NULL.
    """

    algorithm: KeyAlgorithm = "ecc-p256"
    name_alg: NameAlg = "sha256"
    restricted: bool = True
    sign: bool = True
    decrypt: bool = False
    fixed_tpm: bool = True
    fixed_parent: bool = True
    sensitive_data_origin: bool = True
    scheme_pinned: bool = True

    @classmethod
    def attestation_key(cls, algorithm: AkAlgorithm = "ecc-p256") -> KeySpec:
        """A restricted signing key: fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign."""
        return cls(algorithm=algorithm)

    @classmethod
    def identity_key(cls) -> KeySpec:
        """The attestation key's attributes without restricted, on P-256 with ECDSA-SHA256."""
        return cls(algorithm="ecc-p256", restricted=False)

    def template(self) -> Any:
        """The TPMT_PUBLIC template (tpm2-pytss object) for TPM2_Create."""
        flag = _c.TPMA_OBJECT
        attrs = flag.USERWITHAUTH
        for wanted, bit in (
            (self.fixed_tpm, flag.FIXEDTPM),
            (self.fixed_parent, flag.FIXEDPARENT),
            (self.sensitive_data_origin, flag.SENSITIVEDATAORIGIN),
            (self.restricted, flag.RESTRICTED),
            (self.sign, flag.SIGN_ENCRYPT),
            (self.decrypt, flag.DECRYPT),
        ):
            if wanted:
                attrs |= bit
        public = _t.TPMT_PUBLIC()
        public.nameAlg = _NAME_ALGS[self.name_alg]
        public.objectAttributes = attrs
        hash_alg = _c.TPM2_ALG.SHA384 if self.algorithm == "ecc-p384" else _c.TPM2_ALG.SHA256
        null = _c.TPM2_ALG.NULL
        if self.algorithm in _CURVES:
            public.type = _c.TPM2_ALG.ECC
            ecc = public.parameters.eccDetail
            ecc.symmetric.algorithm = null
            ecc.curveID = _CURVES[self.algorithm]
            ecc.kdf.scheme = null
            ecc.scheme.scheme = self._scheme(_c.TPM2_ALG.ECDSA, _c.TPM2_ALG.ECDH)
            if ecc.scheme.scheme != null:
                # TPMU_ASYM_SCHEME is a union of TPMS_SCHEME_HASH: the hash sits at the same place.
                ecc.scheme.details.anySig.hashAlg = hash_alg
        else:
            public.type = _c.TPM2_ALG.RSA
            rsa_ = public.parameters.rsaDetail
            rsa_.symmetric.algorithm = null
            rsa_.keyBits = _RSA_BITS[self.algorithm]
            rsa_.exponent = 0
            rsa_.scheme.scheme = self._scheme(_c.TPM2_ALG.RSASSA, _c.TPM2_ALG.OAEP)
            if rsa_.scheme.scheme != null:
                rsa_.scheme.details.anySig.hashAlg = hash_alg
        return public

    def _scheme(self, signing: int, decrypting: int) -> int:
        if not self.scheme_pinned:
            return int(_c.TPM2_ALG.NULL)
        # A key that both signs and decrypts has no single scheme to pin: ask for the signing one and
        # let the TPM answer (it refuses: Part 2 wants TPM_ALG_NULL there).
        return int(signing if self.sign else decrypting)


def public_key(public: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """The `cryptography` public key of a marshalled TPMT_PUBLIC (ECC P-256/P-384 or RSA)."""
    area, _ = _t.TPMT_PUBLIC.unmarshal(public)
    if area.type == _c.TPM2_ALG.ECC:
        curves: dict[int, ec.EllipticCurve] = {
            int(_c.TPM2_ECC.NIST_P256): ec.SECP256R1(),
            int(_c.TPM2_ECC.NIST_P384): ec.SECP384R1(),
        }
        curve = curves.get(int(area.parameters.eccDetail.curveID))
        if curve is None:
            raise TpmError("unsupported ECC curve")
        x = int.from_bytes(bytes(area.unique.ecc.x), "big")
        y = int.from_bytes(bytes(area.unique.ecc.y), "big")
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    if area.type == _c.TPM2_ALG.RSA:
        exponent = int(area.parameters.rsaDetail.exponent) or 65537
        modulus = int.from_bytes(bytes(area.unique.rsa), "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    raise TpmError("unsupported key type")


def _certify_scheme(ak_public: bytes) -> Any:
    """The inScheme for TPM2_Certify: NULL (the key's own) unless the key has none.

    A key without a pinned scheme (only test keys: KeySpec(scheme_pinned=False)) needs one named in
    the command, or the TPM refuses with TPM_RC_SCHEME; ECDSA or RSASSA with SHA-256 is used.
    """
    area, _ = _t.TPMT_PUBLIC.unmarshal(ak_public)
    if area.type == _c.TPM2_ALG.ECC:
        pinned, default = area.parameters.eccDetail.scheme.scheme, _c.TPM2_ALG.ECDSA
    else:
        pinned, default = area.parameters.rsaDetail.scheme.scheme, _c.TPM2_ALG.RSASSA
    if pinned != _c.TPM2_ALG.NULL:
        return _t.TPMT_SIG_SCHEME(scheme=_c.TPM2_ALG.NULL)
    scheme = _t.TPMT_SIG_SCHEME(scheme=default)
    scheme.details.any.hashAlg = _c.TPM2_ALG.SHA256
    return scheme


PcrBank = Literal["sha1", "sha256", "sha384"]
_PCR_BANKS: dict[PcrBank, int] = {
    "sha1": int(_c.TPM2_ALG.SHA1),
    "sha256": int(_c.TPM2_ALG.SHA256),
    "sha384": int(_c.TPM2_ALG.SHA384),
}


def _selection(bank: PcrBank, pcrs: Sequence[int]) -> Any:
    """TPML_PCR_SELECTION of `pcrs` (0..23) in one bank."""
    if not pcrs or any(not 0 <= p <= 23 for p in pcrs):
        raise TpmError(f"PCR selection {list(pcrs)} must be non-empty and within 0..23")
    return _t.TPML_PCR_SELECTION.parse(f"{bank}:{','.join(str(p) for p in sorted(set(pcrs)))}")


def _selected_pcrs(selection: Any) -> list[int]:
    pcrs: list[int] = []
    for i in range(int(selection.count)):
        bank = selection.pcrSelections[i]
        bitmap = bytes(bank.pcrSelect)[: int(bank.sizeofSelect)]
        pcrs += [n for n in range(len(bitmap) * 8) if bitmap[n // 8] & (1 << (n % 8))]
    return pcrs


class TruckTpm:
    """An open ESAPI connection to the truck's TPM. Use `TruckTpm.open(tcti)` as a context manager."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._ek: dict[EkKind, Any] = {}
        self._held: dict[KeyBlob, Any] = {}  # blobs kept loaded by `holding`, and their handles

    @classmethod
    def open(cls, tcti: str) -> TruckTpm:
        """Connect through a tpm2-tools style TCTI string, e.g. "swtpm:port=2321" or "device:/dev/tpmrm0"."""
        return cls(ESAPI(tcti))

    def close(self) -> None:
        for handle in self._ek.values():
            self._ctx.tr_close(handle)
        self._ek.clear()
        self._ctx.close()

    def __enter__(self) -> TruckTpm:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- EK --------------------------------------------------------------------------------------

    def _ek_handle(self, kind: EkKind) -> Any:
        if kind not in self._ek:
            self._ek[kind] = self._ctx.tr_from_tpmpublic(EK_HANDLES[kind])
        return self._ek[kind]

    def ek_public(self, kind: EkKind) -> bytes:
        """The persistent EK's marshalled TPMT_PUBLIC (TPM2_ReadPublic)."""
        public, _, _ = self._ctx.read_public(self._ek_handle(kind))
        return bytes(public.publicArea.marshal())

    def ek_certificate(self, kind: EkKind) -> bytes:
        """The DER EK certificate from its TCG NV index, read in NV-buffer-sized chunks."""
        index = self._ctx.tr_from_tpmpublic(EK_CERT_NV_INDICES[kind])
        try:
            nv_public, _ = self._ctx.nv_read_public(index)
            size = int(nv_public.nvPublic.dataSize)
            _, caps = self._ctx.get_capability(_c.TPM2_CAP.TPM_PROPERTIES, _c.TPM2_PT_NV.BUFFER_MAX, 1)
            chunk = int(caps.data.tpmProperties[0].value)
            data = bytearray()
            while len(data) < size:
                part = self._ctx.nv_read(index, min(chunk, size - len(data)), len(data), auth_handle=index)
                data += bytes(part)
            return bytes(data)
        finally:
            self._ctx.tr_close(index)

    @contextmanager
    def _ek_session(self, kind: EkKind) -> Iterator[Any]:
        """A policy session satisfying the EK's authPolicy (PolicyA or PolicyB); flushed on exit."""
        area, _ = _t.TPMT_PUBLIC.unmarshal(self.ek_public(kind))
        hashes = {int(_c.TPM2_ALG.SHA256): "sha256", int(_c.TPM2_ALG.SHA384): "sha384"}
        hash_name = hashes.get(int(area.nameAlg))
        if hash_name is None:
            raise TpmError("unsupported EK nameAlg")
        policy = bytes(area.authPolicy)
        if policy not in (_policy_a(hash_name), _policy_b(hash_name)):
            raise TpmError(f"the {kind} EK has an authPolicy this agent cannot satisfy: {policy.hex()}")
        session = self._ctx.start_auth_session(
            tpm_key=_c.ESYS_TR.NONE,
            bind=_c.ESYS_TR.NONE,
            session_type=_c.TPM2_SE.POLICY,
            symmetric=_t.TPMT_SYM_DEF(algorithm=_c.TPM2_ALG.NULL),
            auth_hash=area.nameAlg,
        )
        try:
            self._ctx.policy_secret(_c.ESYS_TR.ENDORSEMENT, session, session1=_c.ESYS_TR.PASSWORD)
            if policy == _policy_b(hash_name):
                digests = _t.TPML_DIGEST([_policy_a(hash_name), _POLICY_C[hash_name]])
                self._ctx.policy_or(session, digests)
            yield session
        finally:
            self._ctx.flush_context(session)

    # -- keys ------------------------------------------------------------------------------------

    def _create(self, ek_kind: EkKind, template: Any) -> KeyBlob:
        with self._ek_session(ek_kind) as session:
            private, public, _, _, _ = self._ctx.create(
                self._ek_handle(ek_kind),
                _t.TPM2B_SENSITIVE_CREATE(),
                _t.TPM2B_PUBLIC(publicArea=template),
                session1=session,
            )
        return KeyBlob(
            public=bytes(public.publicArea.marshal()),
            private=bytes(private.marshal()),
            name=bytes(public.publicArea.get_name()),
            parent=ek_kind,
        )

    def create_key(self, ek_kind: EkKind, spec: KeySpec) -> KeyBlob:
        """TPM2_Create of `spec` under the EK. The TPM's refusal propagates as TSS2_Exception.

        The blob's name is the one tpm2-pytss computes from the public area the TPM returned, with
        the key's own nameAlg (so a SHA-1-named key gets a SHA-1 name).
        """
        return self._create(ek_kind, spec.template())

    def create_attestation_key(self, ek_kind: EkKind, algorithm: AkAlgorithm = "ecc-p256") -> KeyBlob:
        """A restricted signing key (ECDSA-SHA256 on P-256 or RSASSA-SHA256 RSA-2048) under the EK."""
        return self.create_key(ek_kind, KeySpec.attestation_key(algorithm))

    def create_identity_key(self, ek_kind: EkKind) -> KeyBlob:
        """A non-restricted ECDSA-SHA256 P-256 signing key under the EK: the truck's identity key."""
        return self.create_key(ek_kind, KeySpec.identity_key())

    @contextmanager
    def holding(self, *blobs: KeyBlob) -> Iterator[None]:
        """Keep `blobs` loaded for the block: each operation on them inside it uses the loaded object
        instead of an EK policy session and a TPM2_Load of its own. All are flushed on leaving the
        block, also on error (no resource manager would). A TPM has few transient slots (swtpm: 3), and
        an operation that loads another key needs one more: hold two at most."""
        with ExitStack() as stack:
            for blob in blobs:
                if blob in self._held:
                    continue  # an enclosing block holds it (and flushes it)
                self._held[blob] = stack.enter_context(self._load(blob))
                stack.callback(self._held.pop, blob, None)
            yield

    @contextmanager
    def _loaded(self, blob: KeyBlob) -> Iterator[Any]:
        """`blob`'s handle: the held one inside `holding`, else loaded now and flushed on exit."""
        held = self._held.get(blob)
        if held is not None:
            yield held
            return
        with self._load(blob) as handle:
            yield handle

    @contextmanager
    def _load(self, blob: KeyBlob) -> Iterator[Any]:
        """Load `blob` under its EK; the transient object is flushed on exit."""
        public = _t.TPM2B_PUBLIC(publicArea=_t.TPMT_PUBLIC.unmarshal(blob.public)[0])
        private, _ = _t.TPM2B_PRIVATE.unmarshal(blob.private)
        with self._ek_session(blob.parent) as session:
            handle = self._ctx.load(self._ek_handle(blob.parent), private, public, session1=session)
        try:
            if bytes(self._ctx.tr_get_name(handle)) != blob.name:
                raise TpmError("loaded key's name differs from the blob's name")
            yield handle
        finally:
            self._ctx.flush_context(handle)

    # -- operations ------------------------------------------------------------------------------

    def certify(self, identity: KeyBlob, ak: KeyBlob, qualifying_data: bytes) -> tuple[bytes, bytes]:
        """TPM2_Certify of `identity` by `ak`: (marshalled TPMS_ATTEST, marshalled TPMT_SIGNATURE)."""
        with self._loaded(ak) as ak_handle, self._loaded(identity) as key_handle:
            attest, signature = self._ctx.certify(
                key_handle,
                ak_handle,
                _t.TPM2B_DATA(qualifying_data),
                _certify_scheme(ak.public),
                session1=_c.ESYS_TR.PASSWORD,
                session2=_c.ESYS_TR.PASSWORD,
            )
        return bytes(attest), bytes(signature.marshal())

    def quote(
        self, ak: KeyBlob, qualifying_data: bytes, bank: PcrBank, pcrs: Sequence[int]
    ) -> tuple[bytes, bytes]:
        """TPM2_Quote of `pcrs` in `bank`, signed by `ak` with its own scheme:
        (marshalled TPMS_ATTEST, marshalled TPMT_SIGNATURE)."""
        with self._loaded(ak) as ak_handle:
            attest, signature = self._ctx.quote(
                ak_handle,
                _selection(bank, pcrs),
                _t.TPM2B_DATA(qualifying_data),
                _certify_scheme(ak.public),
                session1=_c.ESYS_TR.PASSWORD,
            )
        return bytes(attest), bytes(signature.marshal())

    def pcr_read(self, bank: PcrBank, pcrs: Sequence[int]) -> dict[int, bytes]:
        """Current values of `pcrs` in `bank`. TPM2_PCR_Read returns at most 8 digests a call, so the
        selection is read in chunks and each answer is checked against what was asked."""
        values: dict[int, bytes] = {}
        wanted = sorted(set(pcrs))
        for start in range(0, len(wanted), 8):
            chunk = wanted[start : start + 8]
            _, selected, digests = self._ctx.pcr_read(_selection(bank, chunk))
            got = _selected_pcrs(selected)
            if got != chunk or len(digests) != len(chunk):
                raise TpmError(f"PCR_Read answered {got} for {chunk}: bank {bank} not allocated?")
            values.update(zip(chunk, (bytes(d) for d in digests), strict=True))
        return values

    def pcr_extend(self, pcr: int, digests: Mapping[PcrBank, bytes]) -> None:
        """TPM2_PCR_Extend of one PCR in each given bank (an event's digests, one per bank)."""
        values = []
        for bank, digest in digests.items():
            ha = _t.TPMT_HA(hashAlg=_PCR_BANKS[bank])
            setattr(ha.digest, bank, digest)
            values.append(ha)
        self._ctx.pcr_extend(
            _c.ESYS_TR.PCR0 + pcr, _t.TPML_DIGEST_VALUES(values), session1=_c.ESYS_TR.PASSWORD
        )

    def activate_credential(
        self, ak: KeyBlob, ek_kind: EkKind, credential_blob: bytes, encrypted_secret: bytes
    ) -> bytes:
        """TPM2_ActivateCredential: the secret the authority sealed to the EK for the AK's name.

        credential_blob and encrypted_secret are the contents (no size prefix) of the
        TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET of TPM2_MakeCredential.
        """
        with self._loaded(ak) as ak_handle, self._ek_session(ek_kind) as session:
            secret = self._ctx.activate_credential(
                ak_handle,
                self._ek_handle(ek_kind),
                _t.TPM2B_ID_OBJECT(credential_blob),
                _t.TPM2B_ENCRYPTED_SECRET(encrypted_secret),
                session1=_c.ESYS_TR.PASSWORD,
                session2=session,
            )
        return bytes(secret)

    def sign_digest(self, key: KeyBlob, digest: bytes) -> tuple[int, int]:
        """TPM2_Sign of a SHA-256 digest with a non-restricted ECDSA key (null ticket): (r, s)."""
        scheme = _t.TPMT_SIG_SCHEME(scheme=_c.TPM2_ALG.ECDSA)
        scheme.details.ecdsa.hashAlg = _c.TPM2_ALG.SHA256
        ticket = _t.TPMT_TK_HASHCHECK(tag=_c.TPM2_ST.HASHCHECK, hierarchy=_c.TPM2_RH.NULL)
        with self._loaded(key) as handle:
            signature = self._ctx.sign(handle, _t.TPM2B_DIGEST(digest), scheme, ticket)
        ecdsa = signature.signature.ecdsa
        return int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")

    def identity_signer(self, identity: KeyBlob) -> TpmEcdsaKey:
        """An EllipticCurvePrivateKey whose signatures the TPM makes (valid while this TPM is open)."""
        key = public_key(identity.public)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise TpmError("the identity key is not an ECC key")
        return TpmEcdsaKey(key, lambda digest: self.sign_digest(identity, digest))
