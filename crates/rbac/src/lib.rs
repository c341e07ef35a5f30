//! The RBAC-evaluation core of ksiam.
