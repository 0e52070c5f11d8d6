"""Resource type names: which the hub ingests (and as what), and which are known FHIR types.

The known list exists only so that messages can name the type of a rejected resource: a
`resourceType` outside it is reported as "unknown", because echoing arbitrary text from a
record could leak PHI.
"""

from __future__ import annotations

# resourceType -> canonical entity (docs/data-contracts.md).
ENTITY_OF = {
    "Patient": "patient",
    "Condition": "condition",
    "Encounter": "encounter",
    "Observation": "observation",
    "MedicationRequest": "medication_request",
    "Immunization": "immunization",
    "Procedure": "procedure",
    "Appointment": "appointment",
    "Consent": "consent",
}

# FHIR R4/R4B resource types (from fhir.resources.R4B), plus a few R5 names seen in the wild.
# (a whitespace-separated block: far easier to review than a 150-item list literal)
_NAMES = """
    Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance
    Appointment AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct
    BodyStructure Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
    ChargeItemDefinition Citation Claim ClaimResponse ClinicalImpression ClinicalUseDefinition
    CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap
    Condition Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse
    DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference Encounter Endpoint EnrollmentRequest
    EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceReport EvidenceVariable
    ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group
    GuidanceResponse HealthcareService ImagingStudy Immunization ImmunizationEvaluation
    ImmunizationRecommendation ImplementationGuide Ingredient InsurancePlan Invoice Library
    Linkage List Location ManufacturedItemDefinition Measure MeasureReport Media Medication
    MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest
    MedicationStatement MedicinalProductDefinition MessageDefinition MessageHeader
    MolecularSequence NamingSystem NutritionOrder NutritionProduct Observation
    ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation PackagedProductDefinition Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole Procedure
    Provenance Questionnaire QuestionnaireResponse RegulatedAuthorization RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject
    RiskAssessment Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition
    StructureDefinition StructureMap Subscription SubscriptionStatus SubscriptionTopic Substance
    SubstanceDefinition SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport
    TestScript ValueSet VerificationResult VisionPrescription
    DeviceDispense DeviceUsage EncounterHistory FormularyItem ImagingSelection
    InventoryItem InventoryReport Permission RequestOrchestration
    Requirements Transport
"""
KNOWN_TYPES = frozenset(_NAMES.split())


def safe_type_name(resource_type: str) -> str:
    """The resourceType for a message if it is a known FHIR type, else a neutral placeholder."""
    return resource_type if resource_type in KNOWN_TYPES else "(unknown resourceType)"
