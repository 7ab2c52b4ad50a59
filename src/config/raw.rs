//! Serde mirror of the TOML file, exactly as written (`deny_unknown_fields`,
//! `Option` fields, `toml::Spanned` where a value needs a semantic check).
