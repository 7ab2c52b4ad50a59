//! Key Vault REST JSON shapes (PROTOCOL.md §5). Optional fields are omitted
//! by the service, never null; parse liberally.
