//! TODO(skeleton): sa
