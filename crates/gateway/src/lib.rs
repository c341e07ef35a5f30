//! The ksiam API gateway (placeholder until it lands).
