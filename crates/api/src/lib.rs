//! Kubernetes object types of ksiam.
