//! ETF placeholder.
use super::DecodeError;

pub(crate) fn to_json(_etf: &[u8], _limit: usize) -> Result<Vec<u8>, DecodeError> {
    Err(DecodeError::Malformed("ETF is not supported yet".into()))
}
