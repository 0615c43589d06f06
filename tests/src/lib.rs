//! Helpers for the integration tests live here.
