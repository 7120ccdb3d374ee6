//! The TLS client configuration of outbound connections that Switchyard
//! builds itself (tenant targets, PostgreSQL); reqwest and lettre build
//! theirs from the same crates.

use std::sync::Arc;

/// rustls with the aws-lc-rs provider and the system's roots
/// (rustls-platform-verifier): a certificate must chain to a root the
/// system trusts and name the host.
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth())
}
