//! The twilight_dispatch profile.
