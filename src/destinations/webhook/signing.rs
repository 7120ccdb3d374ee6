//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! Every outbound webhook carries `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` headers. The signature is HMAC-SHA256 over
//! `{msg_id}.{timestamp}.{body}`, written as `v1,<base64>`; several
//! space-separated signatures let a connection rotate its secret without
//! downtime (the new and the old secret both sign until receivers switch).
//!
//! Secrets are shown to users as `whsec_<base64>`, so any Standard Webhooks
//! verifier library can check our deliveries.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix that marks a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Smallest decoded key the specification allows (192 bits).
pub const MIN_SECRET_BYTES: usize = 24;

/// Largest decoded key the specification allows (512 bits). It is also
/// SHA-256's block size, which [`WebhookSecret::mac`] relies on.
pub const MAX_SECRET_BYTES: usize = 64;

/// Length of the keys [`WebhookSecret::generate`] makes.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// Why a `whsec_…` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("webhook secret must start with `whsec_`")]
    MissingPrefix,
    #[error("webhook secret is not valid base64 after `whsec_`")]
    Base64,
    #[error("webhook secret must decode to {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes, got {len}")]
    Length { len: usize },
}

/// A connection's signing key: the raw key bytes.
///
/// Always between [`MIN_SECRET_BYTES`] and [`MAX_SECRET_BYTES`] long; the
/// constructors enforce it. `Debug` never prints the key.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A fresh random 32-byte key from the thread-local CSPRNG (seeded from
    /// the operating system).
    pub fn generate() -> Self {
        Self(rand::random::<[u8; GENERATED_SECRET_BYTES]>().to_vec())
    }

    /// Parses the user-facing form `whsec_<base64>`.
    ///
    /// Padding is optional (some tools strip it); the decoded key must be
    /// 24–64 bytes, exactly the specification's range.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningError::MissingPrefix)?;
        let key = LENIENT_BASE64
            .decode(encoded)
            .map_err(|_| SigningError::Base64)?;
        Self::from_bytes(key)
    }

    /// Wraps raw key bytes, checking the length.
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, SigningError> {
        if (MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            Ok(Self(key))
        } else {
            Err(SigningError::Length { len: key.len() })
        }
    }

    /// The user-facing form, `whsec_<standard base64 with padding>`.
    ///
    /// Deliberately a method rather than `Display`, so the secret never ends
    /// up in a log line by accident.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The raw key bytes (for storage).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An HMAC-SHA256 instance keyed with this secret.
    ///
    /// HMAC zero-pads keys shorter than the hash's block size, and our keys
    /// are at most one block (64 bytes), so the zero-padded block *is* the
    /// HMAC key. That lets us use the infallible `KeyInit::new` instead of
    /// `new_from_slice` and its impossible error.
    fn mac(&self) -> HmacSha256 {
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        for (slot, byte) in block.iter_mut().zip(&self.0) {
            *slot = *byte;
        }
        <HmacSha256 as KeyInit>::new(&block)
    }

    /// The MAC over the signed content, before it is finalized.
    fn mac_for(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        add_signed_content(&mut mac, msg_id, timestamp, body);
        mac
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// One signature, `v1,<base64 HMAC-SHA256 over "{msg_id}.{timestamp}.{body}">`.
///
/// `msg_id` must not contain `.` (the specification forbids it, since it
/// would make the signed content ambiguous); our ids are ULIDs.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signature = String::with_capacity(SIGNATURE_LEN);
    push_signature(&mut signature, secret.mac_for(msg_id, timestamp, body));
    signature
}

/// The `webhook-signature` header value: one signature per secret,
/// space-separated, in the order given (during rotation: new, then old).
pub fn signature_header(
    secrets: &[&WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A secret's HMAC with its key already hashed in (the inner and outer
/// pads), so each signature only hashes the message. Kept per connection
/// by the webhook send; `Debug` never prints it.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl SigningKey {
    pub fn new(secret: &WebhookSecret) -> Self {
        Self(secret.mac())
    }

    /// `v1,<base64 HMAC-SHA256 over "{msg_id}.{timestamp}.{body}">`, the
    /// same as [`sign`] with the secret this key was made from.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signature = String::with_capacity(SIGNATURE_LEN);
        self.sign_into(&mut signature, msg_id, timestamp, body);
        signature
    }

    /// [`SigningKey::sign`], appended to `out`.
    fn sign_into(&self, out: &mut String, msg_id: &str, timestamp: i64, body: &[u8]) {
        let mut mac = self.0.clone();
        add_signed_content(&mut mac, msg_id, timestamp, body);
        push_signature(out, mac);
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// [`signature_header`] with keys made once.
pub fn signature_header_keyed(
    keys: &[&SigningKey],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut header = String::with_capacity(keys.len() * (SIGNATURE_LEN + 1));
    for (n, key) in keys.iter().enumerate() {
        if n > 0 {
            header.push(' ');
        }
        key.sign_into(&mut header, msg_id, timestamp, body);
    }
    header
}

/// Feeds the signed content, `{msg_id}.{timestamp}.{body}`, to `mac`.
fn add_signed_content(mac: &mut HmacSha256, msg_id: &str, timestamp: i64, body: &[u8]) {
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// Appends `v1,<base64 of the MAC's tag>` to `out`.
fn push_signature(out: &mut String, mac: HmacSha256) {
    out.push_str(SIGNATURE_VERSION);
    out.push(',');
    STANDARD.encode_string(mac.finalize().into_bytes(), out);
}

/// Whether any `v1` signature in `header` was made with `secret` over this
/// message. Other schemes (such as `v1a`) and malformed entries are skipped.
///
/// The comparison is constant-time. The timestamp's freshness (the
/// reference libraries allow ±5 minutes) is the caller's business.
pub fn verify(
    secret: &WebhookSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected = secret.mac_for(msg_id, timestamp, body);
    header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok())
}

type HmacSha256 = Hmac<Sha256>;

/// The symmetric (HMAC-SHA256) signature scheme's identifier.
const SIGNATURE_VERSION: &str = "v1";
/// `v1,` and the base64 of a 32-byte tag.
const SIGNATURE_LEN: usize = 3 + 44;

/// Standard alphabet, padding accepted but not required.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's published test vector (also used by the
    // standard-webhooks reference libraries' tests).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> WebhookSecret {
        WebhookSecret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn matches_the_specification_test_vector() {
        let secret = spec_secret();
        assert_eq!(
            sign(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
        assert!(verify(
            &secret,
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            SPEC_SIGNATURE
        ));
        assert_eq!(secret.expose(), SPEC_SECRET);
    }

    #[test]
    fn a_signing_key_signs_as_its_secret_does() {
        let secret = spec_secret();
        let key = SigningKey::new(&secret);
        assert_eq!(key.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
        // Reused: the key's state is not consumed by a signature.
        assert_eq!(key.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
        let other = WebhookSecret::generate();
        assert_eq!(
            signature_header_keyed(&[&key, &SigningKey::new(&other)], "msg_1", 7, b"{}"),
            signature_header(&[&secret, &other], "msg_1", 7, b"{}")
        );
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }

    #[test]
    fn generated_secrets_round_trip_and_differ() {
        let secret = WebhookSecret::generate();
        assert_eq!(secret.as_bytes().len(), GENERATED_SECRET_BYTES);
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        let parsed = WebhookSecret::parse(&text).unwrap();
        assert_eq!(parsed.as_bytes(), secret.as_bytes());
        assert_eq!(
            sign(&parsed, "msg_1", 1, b"{}"),
            sign(&secret, "msg_1", 1, b"{}")
        );
        assert_ne!(WebhookSecret::generate().expose(), text);
    }

    #[test]
    fn parse_refuses_bad_secrets() {
        assert_eq!(
            WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SigningError::MissingPrefix
        );
        assert_eq!(
            WebhookSecret::parse("whsec_not base64!").unwrap_err(),
            SigningError::Base64
        );
        // 5 bytes: too short.
        assert_eq!(
            WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SigningError::Length { len: 5 }
        );
        let too_long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(
            WebhookSecret::parse(&too_long).unwrap_err(),
            SigningError::Length { len: 65 }
        );
        let longest = format!("whsec_{}", STANDARD.encode([7u8; 64]));
        assert!(WebhookSecret::parse(&longest).is_ok());
    }

    #[test]
    fn parse_accepts_missing_padding() {
        let secret = WebhookSecret::generate();
        let unpadded = secret.expose().trim_end_matches('=').to_owned();
        let parsed = WebhookSecret::parse(&unpadded).unwrap();
        assert_eq!(parsed.as_bytes(), secret.as_bytes());
    }

    #[test]
    fn longest_key_signs_like_plain_hmac() {
        // The zero-padding shortcut in `mac` must agree with HMAC's own key
        // handling at the 64-byte limit too.
        let key = [0xA5u8; MAX_SECRET_BYTES];
        let secret = WebhookSecret::from_bytes(key.to_vec()).unwrap();
        let mut reference = <HmacSha256 as KeyInit>::new_from_slice(&key).unwrap();
        reference.update(b"msg_1.2.body");
        let expected = format!("v1,{}", STANDARD.encode(reference.finalize().into_bytes()));
        assert_eq!(sign(&secret, "msg_1", 2, b"body"), expected);
    }

    #[test]
    fn rotation_header_verifies_with_either_secret() {
        let new = WebhookSecret::generate();
        let old = spec_secret();
        let header = signature_header(&[&new, &old], SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);

        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], SPEC_SIGNATURE);
        assert!(verify(&new, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &header));
        assert!(verify(&old, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &header));
        let stranger = WebhookSecret::generate();
        assert!(!verify(
            &stranger,
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            &header
        ));
    }

    #[test]
    fn tampering_fails_verification() {
        let secret = spec_secret();
        let header = sign(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert!(!verify(
            &secret,
            SPEC_ID,
            SPEC_TIMESTAMP,
            br#"{"test": 2432232315}"#,
            &header
        ));
        assert!(!verify(
            &secret,
            "msg_other",
            SPEC_TIMESTAMP,
            SPEC_BODY,
            &header
        ));
        assert!(!verify(
            &secret,
            SPEC_ID,
            SPEC_TIMESTAMP + 1,
            SPEC_BODY,
            &header
        ));
        // Right bytes under another scheme name, garbage and empty headers.
        let as_v1a = header.replacen("v1,", "v1a,", 1);
        for bad in [as_v1a.as_str(), "v1,!!!", "v1", "", "  "] {
            assert!(!verify(&secret, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, bad));
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let secret = spec_secret();
        let debug = format!("{secret:?}");
        assert!(!debug.contains("MfKQ9r8G"));
        assert!(!debug.contains(&format!("{:?}", secret.as_bytes())));
        assert!(debug.contains("redacted"));
    }

    proptest::proptest! {
        #[test]
        fn any_message_round_trips_and_any_flipped_byte_fails(
            msg_id in "[a-zA-Z0-9_]{1,40}",
            timestamp in proptest::num::i64::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            flip in proptest::num::usize::ANY,
        ) {
            let secret = WebhookSecret::generate();
            let header = sign(&secret, &msg_id, timestamp, &body);
            proptest::prop_assert!(verify(&secret, &msg_id, timestamp, &body, &header));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip % body.len()] ^= 0x01;
                proptest::prop_assert!(!verify(&secret, &msg_id, timestamp, &tampered, &header));
            }
        }
    }
}
