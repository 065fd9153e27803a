"""Appraisal against golden releases: one PCR or one release attribute changed per case."""

from __future__ import annotations

from attest.appraise import CONTRAINDICATED, UNRECOGNIZED, GoldenRelease, Status, appraise

VALUES = {i: bytes([i]) * 32 for i in range(16)}


def release(version: str = "1.0", *, revoked: bool = False, **changes: bytes) -> GoldenRelease:
    pcrs = dict(VALUES)
    for name, value in changes.items():
        pcrs[int(name.removeprefix("pcr"))] = value
    return GoldenRelease(id=f"id-{version}", version=version, bank="sha256", pcrs=pcrs, revoked=revoked)


def test_matching_active_release_affirms() -> None:
    result = appraise("sha256", VALUES, [release()])
    assert (
        result.status is Status.AFFIRMING and result.release is not None and result.release.version == "1.0"
    )
    assert set(result.trust_vector.values()) == {2}


def test_one_pcr_off_is_unknown_firmware() -> None:
    result = appraise("sha256", VALUES, [release(pcr8=b"\xff" * 32)])
    assert result.status is Status.WARNING and result.release is None
    assert result.trust_vector["executables"] == UNRECOGNIZED


def test_revoked_release_is_contraindicated_unless_an_active_one_matches_too() -> None:
    revoked = appraise("sha256", VALUES, [release(revoked=True)])
    assert revoked.status is Status.CONTRAINDICATED and revoked.trust_vector["executables"] == CONTRAINDICATED
    assert "revoked release 1.0" in revoked.reasons[0]
    both = appraise("sha256", VALUES, [release("1.0", revoked=True), release("1.1")])
    assert both.status is Status.AFFIRMING and both.release is not None and both.release.version == "1.1"


def test_other_bank_never_matches() -> None:
    assert appraise("sha384", VALUES, [release()]).status is Status.WARNING


def test_quote_warnings_downgrade_affirming() -> None:
    result = appraise("sha256", VALUES, [release()], warnings=["clock-not-safe"])
    assert result.status is Status.WARNING and "warning: clock-not-safe" in result.reasons


def test_release_silent_about_a_quoted_pcr_does_not_match() -> None:
    partial = GoldenRelease(id="p", version="fw-only", bank="sha256", pcrs={0: VALUES[0]}, revoked=False)
    assert appraise("sha256", VALUES, [partial]).status is Status.WARNING
    assert appraise("sha256", {0: VALUES[0]}, [partial]).status is Status.AFFIRMING
