"""The claims audit: pure checks of a paper's printed numbers against each other and against a reproduction.

One module per check family, each returning `record.Check`s with status pass | fail | not_checkable:
granularity (GRIM), sizes, consistency, derived, reconstruction, integer_program, folds, stat_tests,
comparisons, reproduction; `groups` gathers the result blocks of one evaluation; `audit.audit_claims` runs them
all (schema "fibrobench.claims_audit/1", see docs/claims-schema.md). A printed number admits the interval of
true values that print that way under the claims file's rounding rule (round by default); where a check fails
under that rule but would pass under another (truncation, or a mix), the reason says so.
"""
from reports.claims_checks.audit import AUDIT_SCHEMA, audit_claims, run_checks
from reports.claims_checks.derived import derived_from_counts
from reports.claims_checks.granularity import grim
from reports.claims_checks.reconstruction import reconstruct
from reports.claims_checks.record import Check
from reports.claims_checks.reproduction import check_reproduction

__all__ = ["AUDIT_SCHEMA", "Check", "audit_claims", "check_reproduction", "derived_from_counts", "grim",
           "reconstruct", "run_checks"]
