//! TODO(skeleton): dataplane
