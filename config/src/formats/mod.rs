//! The configuration files Gatehouse reads, recognised by their shape and turned into the tree
//! of Gatehouse's own TOML format:
//!
//! - Gatehouse's TOML (`gatehouse.toml`, see `gatehouse config example`);
//! - the Spectacles gateway's TOML (`-config gateway.toml`): [`spectacles`];
//! - Retsu's `config.json`: [`retsu`];
//! - besides, a `.env` file of `NAME=value` lines (twilight-dispatch's setup): [`dotenv`].
//!
//! Owns: recognising a format and translating its keys. Does not own: the environment overlay
//! or validation ([`crate::load`]).

pub mod dotenv;
pub mod retsu;
pub mod spectacles;

/// The tree of Gatehouse's format from a file's text (empty text gives an empty tree).
/// Translations from a predecessor's format add warnings for keys without effect.
pub fn read(text: &str, warnings: &mut Vec<String>) -> Result<toml::Table, crate::ConfigError> {
    if text.trim_start().starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| crate::ConfigError::File(format!("not valid JSON: {e}")))?;
        return retsu::translate(&json, warnings);
    }
    let table: toml::Table =
        toml::from_str(text).map_err(|e| crate::ConfigError::File(e.to_string()))?;
    if spectacles::looks_like(&table) {
        return spectacles::translate(table, warnings);
    }
    Ok(table)
}

/// A string for a TOML tree.
pub(crate) fn string(text: impl Into<String>) -> toml::Value {
    toml::Value::String(text.into())
}

/// Sets a key of the translated tree (the paths are fixed, so this cannot fail).
pub(crate) fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    set_path(table, path, value).expect("translations only create tables");
}

/// Sets `path` in the tree, creating tables on the way.
pub(crate) fn set_path(
    table: &mut toml::Table,
    path: &[&str],
    value: toml::Value,
) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("paths are never empty");
    let mut current = table;
    for (depth, key) in parents.iter().enumerate() {
        let entry = current
            .entry((*key).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| format!("the file's `{}` is not a table", path[..=depth].join(".")))?;
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}
