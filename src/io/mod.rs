//! TODO(skeleton): io
