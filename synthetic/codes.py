"""Clinical code pools (SNOMED CT, LOINC, RxNorm, CVX) and the code systems the generator uses.

Indexes into these tuples are what `people.Person` stores; renderers look up code and display.
"""

from __future__ import annotations

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
# Hub-local code system for appointment services (same namespace as the hub's purpose codes).
SERVICE_SYSTEM = "https://audience-hub.dev/fhir/CodeSystem/service"

# The hospital that assigns MRNs: HL7 PID-3 assigning authority and FHIR identifier.system.
MRN_AUTHORITY = "HUBHOSP"
MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"

# Conditions: (SNOMED code, display, short text). Order matters: people.py uses the indexes.
CONDITIONS = (
    ("44054006", "Diabetes mellitus type 2 (disorder)", "Type 2 diabetes"),
    ("38341003", "Hypertensive disorder, systemic arterial (disorder)", "Hypertension"),
    ("55822004", "Hyperlipidemia (disorder)", "Hyperlipidemia"),
    ("714628002", "Prediabetes (finding)", "Prediabetes"),
    ("195967001", "Asthma (disorder)", "Asthma"),
    ("35489007", "Depressive disorder (disorder)", "Depression"),
    ("414916001", "Obesity (disorder)", "Obesity"),
    ("13645005", "Chronic obstructive lung disease (disorder)", "COPD"),
    ("709044004", "Chronic kidney disease (disorder)", "Chronic kidney disease"),
    ("49436004", "Atrial fibrillation (disorder)", "Atrial fibrillation"),
    ("396275006", "Osteoarthritis (disorder)", "Osteoarthritis"),
)
DIABETES, HYPERTENSION, HYPERLIPIDEMIA, PREDIABETES, ASTHMA, DEPRESSION, OBESITY = range(7)

# Prevalence per age band (<18, 18-44, 45-64, 65+), one column per CONDITIONS entry.
# Diabetes lands near 10% overall, which keeps the diabetic care-gap segments well populated.
CONDITION_PREVALENCE = (
    (0.005, 0.0, 0.0, 0.0, 0.08, 0.02, 0.05, 0.0, 0.0, 0.0, 0.0),
    (0.04, 0.10, 0.05, 0.05, 0.08, 0.09, 0.15, 0.0, 0.0, 0.0, 0.0),
    (0.14, 0.35, 0.25, 0.10, 0.07, 0.08, 0.18, 0.03, 0.02, 0.01, 0.08),
    (0.20, 0.55, 0.35, 0.10, 0.06, 0.06, 0.15, 0.07, 0.06, 0.05, 0.15),
)

# RxNorm medications: (code, display); CONDITION_MEDS maps a condition index to med indexes.
MEDICATIONS = (
    ("860975", "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("314231", "simvastatin 10 MG Oral Tablet"),
    ("259255", "atorvastatin 80 MG Oral Tablet"),
    ("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("312940", "sertraline 50 MG Oral Tablet"),
    ("855332", "warfarin sodium 5 MG Oral Tablet"),
    ("849574", "naproxen sodium 220 MG Oral Tablet"),
)
CONDITION_MEDS: dict[int, tuple[int, ...]] = {
    0: (0,),
    1: (1, 2),
    2: (3, 4),
    4: (5,),
    5: (6,),
    7: (5,),
    9: (7,),
    10: (8,),
}

# CVX vaccines: (code, display).
VACCINES = (
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("150", "Influenza, injectable, quadrivalent, preservative free"),
    ("158", "influenza, injectable, quadrivalent, contains preservative"),
    (
        "208",
        "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
        "30 mcg/0.3mL dose",
    ),
    (
        "207",
        "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, "
        "100 mcg/0.5mL dose",
    ),
    ("115", "Tdap"),
    ("133", "Pneumococcal conjugate PCV 13"),
    ("187", "zoster vaccine recombinant"),
    ("03", "measles, mumps and rubella virus vaccine"),
    ("20", "diphtheria, tetanus toxoids and acellular pertussis vaccine"),
)
FLU_VACCINES = (0, 1, 2)
COVID_VACCINES = (3, 3, 4)
TDAP, PCV13, ZOSTER, MMR, DTAP = 5, 6, 7, 8, 9

# SNOMED procedures: (code, display).
PROCEDURES = (
    ("24623002", "Screening mammography (procedure)"),
    ("71651007", "Mammography (procedure)"),
    ("73761001", "Colonoscopy (procedure)"),
    ("274031008", "Rectal polypectomy (procedure)"),
    ("171207006", "Depression screening (procedure)"),
    ("430193006", "Medication reconciliation (procedure)"),
    ("399208008", "Plain X-ray of chest (procedure)"),
    ("117015009", "Throat culture (procedure)"),
    ("76601001", "Intramuscular injection (procedure)"),
    ("80146002", "Appendectomy (procedure)"),
)
SCREENING_MAMMO, DIAGNOSTIC_MAMMO, COLONOSCOPY, POLYPECTOMY = 0, 1, 2, 3
MISC_PROCEDURES = (4, 5, 6, 7, 8, 9)

# Encounter classes (v3-ActCode) and the SNOMED encounter types used with each.
ENCOUNTER_CLASSES = (
    ("AMB", "ambulatory"),
    ("EMER", "emergency"),
    ("IMP", "inpatient encounter"),
)
ENCOUNTER_TYPES = (
    (
        ("185349003", "Encounter for check up (procedure)"),
        ("390906007", "Follow-up encounter (procedure)"),
        ("185345009", "Encounter for symptom (procedure)"),
    ),
    (("50849002", "Emergency room admission (procedure)"),),
    (("32485007", "Hospital admission (procedure)"),),
)

# Appointment services (hub-local codes) and statuses.
SERVICES = (
    ("primary-care", "Primary care visit"),
    ("follow-up", "Follow-up visit"),
    ("mammography", "Mammography"),
    ("colonoscopy", "Colonoscopy"),
    ("diabetes-education", "Diabetes education"),
    ("flu-clinic", "Flu clinic"),
    ("cardiology", "Cardiology consult"),
    ("physical-therapy", "Physical therapy"),
)
MAMMO_SERVICE, COLONOSCOPY_SERVICE, DIABETES_SERVICE = 2, 3, 4
GENERAL_SERVICES = (0, 0, 0, 1, 1, 5, 6, 7)
BOOKED, FULFILLED, NOSHOW, CANCELLED = range(4)
APPOINTMENT_STATUSES = ("booked", "fulfilled", "noshow", "cancelled")

# Lab and vital-sign LOINC codes.
HBA1C = ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
GLUCOSE = ("2345-7", "Glucose [Mass/volume] in Serum or Plasma")
BMI = ("39156-5", "Body mass index (BMI) [Ratio]")
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BP_SYSTOLIC = ("8480-6", "Systolic blood pressure")
BP_DIASTOLIC = ("8462-4", "Diastolic blood pressure")

# Value tables: precomputed one-decimal floats, so no per-record rounding.
HBA1C_DIABETIC = tuple(round(6.0 + i / 10, 1) for i in range(51))  # 6.0 .. 11.0 %
HBA1C_PREDIABETIC = tuple(round(5.7 + i / 10, 1) for i in range(8))  # 5.7 .. 6.4 %
HBA1C_NORMAL = tuple(round(4.6 + i / 10, 1) for i in range(11))  # 4.6 .. 5.6 %
BMI_NORMAL = tuple(round(18.5 + i / 10, 1) for i in range(115))  # 18.5 .. 29.9
BMI_OBESE = tuple(round(30.0 + i / 10, 1) for i in range(151))  # 30.0 .. 45.0
