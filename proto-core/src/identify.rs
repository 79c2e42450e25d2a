//! The process-wide identify scheduler (being written).
