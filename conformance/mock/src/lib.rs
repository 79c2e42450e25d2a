//! A mock Discord gateway (being written).
