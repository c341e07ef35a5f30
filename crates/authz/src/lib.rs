//! The ksiam authorizer service (placeholder until it lands).
