//! TODO(skeleton): suite
