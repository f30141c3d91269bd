//! TODO(skeleton): dataplane

pub mod policy;
