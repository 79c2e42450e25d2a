//! The cordis profile.
