//! TODO(skeleton): key
