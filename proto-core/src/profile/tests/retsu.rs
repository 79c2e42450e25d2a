//! The retsu profile.
