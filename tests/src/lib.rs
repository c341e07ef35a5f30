//! Helpers for the e2e tests.
