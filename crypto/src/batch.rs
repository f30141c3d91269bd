//! TODO(skeleton): batch
