//! TODO(skeleton): proto
