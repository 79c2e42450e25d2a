//! The example configuration shipped with the binary parses and matches the defaults it shows.

use gatehouse_config::{Config, DEFAULT_API_BASE};

#[test]
fn the_example_configuration_is_valid() {
    let text = include_str!("../gatehouse.example.toml");
    let example = Config::load(text, |_| None).expect("the example parses");
    let defaults = Config::load("", |_| None).unwrap();
    assert_eq!(example, defaults, "the example shows the defaults");
    assert_eq!(example.discord.api_base, DEFAULT_API_BASE);
}
