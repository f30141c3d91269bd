//! TODO(skeleton): agent

pub mod lab;
