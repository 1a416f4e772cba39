"""DICOM de-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile, with the
Retain Longitudinal Temporal Information with Modified Dates option (dates shifted consistently per patient)
and, on request, the Retain Patient Characteristics option (sex, age band, size, weight).

    surgtwin deid IN_DIR OUT_DIR      # de-identified copy + deid_audit.json (counts only, no values)

Rules, in order, for every element (recursing into sequences):
1. private tags (odd groups) and overlay/curve groups (60xx, 50xx) are removed;
2. attributes listed in ``ACTIONS`` get their profile action: X remove, Z empty, D dummy value;
3. any other person name (PN) is emptied; dates (DA/DT) are shifted by the patient's offset;
4. every UID (UI) that is not a registered DICOM UID (SOP classes, transfer syntaxes...) is remapped to a
   ``2.25.<hash>`` UID keyed by a per-run secret, so references stay consistent across files.
Images whose BurnedInAnnotation is YES are refused unless allowed: pixel text cannot be cleaned here.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .fileio import staged_dir, write_json

# Annex E Table E.1-1 attributes (Basic Profile action; D where a value is required, else Z or X).
ACTIONS = {
    "PatientName": "D", "PatientID": "D", "IssuerOfPatientID": "X", "OtherPatientIDs": "X",
    "OtherPatientNames": "X", "OtherPatientIDsSequence": "X", "PatientBirthName": "X",
    "PatientMotherBirthName": "X", "PatientBirthDate": "Z", "PatientBirthTime": "X", "PatientAddress": "X",
    "PatientTelephoneNumbers": "X", "PatientTelecomInformation": "X", "MilitaryRank": "X", "BranchOfService": "X",
    "MedicalRecordLocator": "X", "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X",
    "PatientComments": "X", "PatientReligiousPreference": "X", "CountryOfResidence": "X",
    "RegionOfResidence": "X", "PatientInsurancePlanCodeSequence": "X", "PatientPrimaryLanguageCodeSequence": "X",
    "ResponsiblePerson": "X", "ResponsibleOrganization": "X", "PatientState": "X", "PregnancyStatus": "X",
    "MedicalAlerts": "X", "Allergies": "X", "SmokingStatus": "X", "LastMenstrualDate": "X",
    "SpecialNeeds": "X", "PatientSex": "Z", "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X",
    "AccessionNumber": "Z", "StudyID": "Z", "InstitutionName": "X", "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X", "InstitutionCodeSequence": "X", "StationName": "X",
    "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X", "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X", "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X", "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X", "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X", "OperatorsName": "X",
    "OperatorIdentificationSequence": "X", "RequestingPhysician": "X", "ScheduledPerformingPhysicianName": "X",
    "RequestAttributesSequence": "X", "RequestedProcedureID": "X", "ScheduledProcedureStepID": "X",
    "PerformedProcedureStepID": "X", "PerformedProcedureStepDescription": "X", "StudyDescription": "X", "SeriesDescription": "X",
    "AdmittingDiagnosesDescription": "X", "AdmittingDiagnosesCodeSequence": "X", "DerivationDescription": "X",
    "ImageComments": "X", "FrameComments": "X", "AdmissionID": "X", "IssuerOfAdmissionID": "X",
    "ServiceEpisodeID": "X", "ServiceEpisodeDescription": "X", "VisitComments": "X",
    "CurrentPatientLocation": "X", "PatientInstitutionResidence": "X", "DeviceSerialNumber": "X",
    "DetectorID": "X", "PlateID": "X", "GantryID": "X", "CassetteID": "X", "GeneratorID": "X",
    "ProtocolName": "X", "AcquisitionComments": "X", "ContrastBolusAgent": "X", "SourceApplicationEntityTitle": "X",
    "StationAETitle": "X", "PerformedStationAETitle": "X", "PerformedStationName": "X",
    "PerformedLocation": "X", "ScheduledStationAETitle": "X", "ScheduledStationName": "X",
    "ScheduledProcedureStepLocation": "X", "DataSetTrailingPadding": "X", "TextString": "X",
    "TextComments": "X", "ContentCreatorName": "Z", "ContentCreatorIdentificationCodeSequence": "X",
    "VerifyingObserverName": "D", "VerifyingOrganization": "X", "PersonName": "D", "PersonAddress": "X",
    "PersonTelephoneNumbers": "X", "OrderEnteredBy": "X", "OrderEntererLocation": "X", "OrderCallbackPhoneNumber": "X",
    "ReferencedPatientSequence": "X", "ReferencedStudySequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X", "ProcedureCodeSequence": "X",
    "RequestedProcedureDescription": "X", "ReasonForTheRequestedProcedure": "X", "Manufacturer": "K",
}
#: Kept under the Retain Patient Characteristics option.
PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")
DUMMY = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANON", "DA": "19000101"}
PROFILE_CODES = [("113100", "Basic Application Confidentiality Profile"),
                 ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")]


@dataclass
class DeidKey:
    """Per-run secret: pseudonyms, date offsets and UID mapping derive from it (never written out)."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    keep_patient_characteristics: bool = False
    allow_burned_in: bool = False

    def _digest(self, *parts: str) -> bytes:
        return hashlib.sha256(self.secret + "\x00".join(parts).encode()).digest()

    def uid(self, original: str) -> str:
        return "2.25." + str(int.from_bytes(self._digest("uid", original)[:16], "big"))

    def pseudonym(self, patient_id: str) -> str:
        return "ST" + self._digest("pid", patient_id).hex()[:10].upper()

    def day_offset(self, patient_id: str) -> int:
        """Days to shift every date of this patient: between -3650 and -365, the same for all files."""
        return -365 - int.from_bytes(self._digest("date", patient_id)[:4], "big") % 3286


def _shift_date(value: str, days: int) -> str:
    try:
        return (dt.datetime.strptime(value[:8], "%Y%m%d") + dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]
    except ValueError:
        return ""  # an unparseable date cannot be kept


def deidentify_dataset(ds, key: DeidKey, audit: Counter) -> None:
    """De-identify a pydicom Dataset in place; ``audit`` counts (keyword, action) pairs, never values."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID_dictionary

    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not key.allow_burned_in:
        raise InputError("an image has burned-in annotation (BurnedInAnnotation = YES): it cannot be "
                         "de-identified here; pass --allow-burned-in only if you have checked the pixels")
    pid = str(ds.get("PatientID", "")) or str(ds.get("PatientName", "")) or "unknown"
    days = key.day_offset(pid)
    pseudonym = key.pseudonym(pid)

    def visit(d: Dataset):
        for elem in list(d):
            tag, kw = elem.tag, elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
            if tag.is_private or (tag.group & 0xFF00) in (0x6000, 0x5000):
                del d[tag]
                audit[("private/overlay", "X")] += 1
                continue
            action = ACTIONS.get(elem.keyword)
            if key.keep_patient_characteristics and elem.keyword in PATIENT_CHARACTERISTICS:
                action = "K"
            if action == "X":
                del d[tag]
            elif action == "Z":
                elem.value = ""
            elif action == "D":
                elem.value = pseudonym if elem.keyword == "PatientID" else (
                    f"ANONYMOUS^{pseudonym}" if elem.keyword == "PatientName" else DUMMY.get(elem.VR, "ANONYMOUS"))
            elif action == "K":
                pass
            elif elem.VR == "SQ":
                for item in elem.value:
                    visit(item)
                action = None
            elif elem.VR == "PN":
                elem.value, action = "", "Z"
            elif elem.VR in ("DA", "DT") and elem.value:
                vals = elem.value if elem.VM > 1 else [elem.value]
                shifted = [_shift_date(str(v), days) for v in vals]
                elem.value = shifted if elem.VM > 1 else shifted[0]
                action = "shift"
            elif elem.VR == "UI" and elem.value:
                vals = elem.value if elem.VM > 1 else [elem.value]
                mapped = [str(v) if str(v) in UID_dictionary else key.uid(str(v)) for v in vals]
                if mapped != [str(v) for v in vals]:
                    elem.value = mapped if elem.VM > 1 else mapped[0]
                    action = "U"
            if action:
                audit[(kw, action)] += 1

    visit(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        original = str(meta.get("MediaStorageSOPInstanceUID", ""))
        if original:
            meta.MediaStorageSOPInstanceUID = key.uid(original)
            if not str(ds.get("SOPInstanceUID", "")):  # some exports blank the dataset copy
                ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            audit[("MediaStorageSOPInstanceUID", "U")] += 1
        if not str(ds.get("SOPClassUID", "")) and meta.get("MediaStorageSOPClassUID"):
            ds.SOPClassUID = meta.MediaStorageSOPClassUID
        if "SourceApplicationEntityTitle" in meta:
            del meta.SourceApplicationEntityTitle
            audit[("SourceApplicationEntityTitle", "X")] += 1
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    codes = PROFILE_CODES + ([("113108", "Retain Patient Characteristics Option")]
                             if key.keep_patient_characteristics else [])
    ds.DeidentificationMethod = "surgtwin: basic profile, modified dates" + (
        ", patient characteristics" if key.keep_patient_characteristics else "")  # LO: at most 64 characters
    seq = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(seq)


def deidentify_folder(src: str | Path, dst: str | Path, *, key: DeidKey | None = None, progress=None) -> dict:
    """Write a de-identified copy of every DICOM file under ``src`` into ``dst`` (files renamed by series
    and instance number) and ``dst/deid_audit.json``. Returns the audit."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    src, key = Path(src), key or DeidKey()
    if not src.is_dir():
        raise InputError(f"no such folder: {src}")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    audit, written, skipped = Counter(), 0, 0
    with staged_dir(dst) as stage:
        for i, path in enumerate(files):
            try:
                ds = pydicom.dcmread(path)
            except (InvalidDicomError, OSError, ValueError):
                skipped += 1
                continue
            deidentify_dataset(ds, key, audit)
            series = str(ds.get("SeriesInstanceUID", "") or "unknown")[-12:].replace(".", "")
            number = int(ds.get("InstanceNumber", i) or i)
            out = stage / f"series_{series}" / f"img_{number:05d}_{i:05d}.dcm"
            out.parent.mkdir(exist_ok=True)
            ds.save_as(out, enforce_file_format=True)
            written += 1
            if progress:
                progress(i + 1, len(files))
        if written == 0:
            raise InputError(f"{src}: no DICOM files found")
        report = {"profile": [m for _, m in PROFILE_CODES], "files_written": written, "files_skipped": skipped,
                  "patient_characteristics_kept": key.keep_patient_characteristics,
                  "actions": {f"{kw} {act}": n for (kw, act), n in sorted(audit.items())},
                  "legend": {"X": "removed", "Z": "emptied", "D": "dummy value", "U": "UID remapped",
                             "shift": "date shifted (per-patient offset, not recorded)", "K": "kept"}}
        write_json(stage / "deid_audit.json", report)
    return report
