//! Shared fixture builders for strata benches.
