//! Tests of the codec that span its modules, through the public API where possible.

mod decoder;
mod envelope_props;
mod support;
