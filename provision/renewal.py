"""Attested renewal of a truck's identity certificate.

The truck sends a CSR signed by its TPM-resident identity key (proof of possession); the key must be
the one certified at its last enrollment, and the truck must hold an affirming attestation no older than
the renewal window and not be quarantined. The new certificate names the registered truck (never the
CSR's names); it is stored with the truck's binding and the audit row in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from attest.public import parse_tpmt_public
from pki.profiles import parse_csr
from provision import audit
from provision.attestation import Attestation
from provision.audit import Actor
from provision.authority import Authority
from provision.enrollment import Enrolled
from provision.errors import RenewalKeyMismatch, TruckNotEnrolled, UnknownTruck
from provision.fleets import spiffe_id
from provision.tables import Truck, TruckEnrollment

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class TruckRenewal:
    def __init__(
        self,
        engine: Engine,
        authority: Authority,
        attestation: Attestation,
        *,
        window: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._authority = authority
        self._attestation = attestation
        self._window = window
        self._clock = clock

    def renew(self, actor: Actor, truck_id: str, csr: bytes) -> Enrolled:
        with audit.refusals(self._engine, actor, "truck.renew", target=truck_id, clock=self._clock):
            return self._renew(actor, truck_id, csr)

    def _renew(self, actor: Actor, truck_id: str, csr: bytes) -> Enrolled:
        request = parse_csr(csr)
        with Session(self._engine) as session:
            truck = session.get(Truck, truck_id)
            if truck is None:
                raise UnknownTruck(f"no truck {truck_id[:64]!r}")
            binding = session.exec(
                select(TruckEnrollment)
                .where(col(TruckEnrollment.truck_id) == truck_id)
                .order_by(col(TruckEnrollment.id).desc())
            ).first()
        if binding is None or truck.state != "enrolled":
            raise TruckNotEnrolled(f"truck {truck_id} has not enrolled")
        enrolled_key = parse_tpmt_public(binding.identity_public).public_key()
        if request.public_key().public_bytes(*_SPKI) != enrolled_key.public_bytes(*_SPKI):
            raise RenewalKeyMismatch("the CSR's key is not the TPM-resident identity key this truck enrolled")
        self._attestation.require_passing(truck_id, self._window)

        uri = spiffe_id(self._authority.config.trust_domain, truck.fleet_id, truck.id)
        prepared = self._authority.prepare(actor, profile="truck", csr=csr, uri_sans=[uri])
        now = self._clock()
        with Session(self._engine) as session:
            for table, values in prepared.rows:
                session.connection().execute(table.insert(), values)
            row = session.get(Truck, truck_id)
            assert row is not None
            previous, row.certificate_serial = row.certificate_serial, prepared.view.serial
            session.add(row)
            detail = {"serial": prepared.view.serial, "renewed_from": previous}
            audit.record(session, audit.values(actor, "truck.renew", at=now, target=truck_id, detail=detail))
            session.commit()
        return Enrolled(truck=truck.id, fleet=truck.fleet_id, spiffe_id=uri, certificate=prepared.view)
