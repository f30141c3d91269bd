//! TODO(skeleton): replay
