//! Reading an agent's configuration document: TOML or JSON text, as turnstile's config holds it
//! (the same rules as the UDS SDK's `parse_config`).

use serde::de::DeserializeOwned;

use crate::info::ConfigError;

/// Parses `bytes` as JSON when its first non-blank character is `{`, as TOML otherwise. An empty
/// document parses like `{}`. Errors name the field when the parser does.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::from(format!("config is not UTF-8: {e}")))?;
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| ConfigError::from(format!("JSON: {e}")))
    } else {
        toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            // toml names unknown or missing fields in its message; keep the first quoted name.
            let field = message
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_default();
            ConfigError::field(field, format!("TOML: {message}"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct C {
        #[serde(default)]
        rate: u32,
    }

    #[test]
    fn toml_json_and_empty() {
        assert_eq!(parse_config::<C>(b"rate = 3").unwrap(), C { rate: 3 });
        assert_eq!(parse_config::<C>(b" {\"rate\": 4}").unwrap(), C { rate: 4 });
        assert_eq!(parse_config::<C>(b"").unwrap(), C { rate: 0 });
        assert_eq!(parse_config::<C>(b"burst = 1").unwrap_err().field, "burst");
        assert!(parse_config::<C>(&[0xff]).is_err());
    }
}
