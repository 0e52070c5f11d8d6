"""Synthetic, deterministic test data for audience-hub: FHIR R4 NDJSON, HL7 v2, CRM CSV.

Entry point: `synthetic.generate.generate(out_dir, patients, seed, as_of)`; see README.md.
"""
