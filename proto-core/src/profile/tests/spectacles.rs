//! The spectacles profile.
