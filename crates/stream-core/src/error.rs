//! Shared error plumbing.

/// A backend's own error, kept as the `source` of the trait errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
