//! TODO(skeleton): dataplane

pub mod policy;
pub mod pipeline;
