//! TODO(skeleton): wire
