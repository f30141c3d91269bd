//! TODO(skeleton): cookie
