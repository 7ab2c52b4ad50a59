//! Filters beyond tera's own (SPEC.md "Template context"): `base64_decode`,
//! `base64_encode`, `json_decode`, `pgpass_escape`, `shell_quote`,
//! `dotenv_quote`.
