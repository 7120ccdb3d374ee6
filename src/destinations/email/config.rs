//! An email connection's config, `{"provider": "resend" | "smtp", "from":
//! "…"}` (no secrets: the credentials are the operator's), and a rule's
//! target `{"to": […]}`, both checked with lettre's parser, the one the send
//! uses.

use crate::config::Config;
use crate::destinations::Invalid;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Who sends an email connection's mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Resend,
    Smtp,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Resend => "resend",
            Provider::Smtp => "smtp",
        }
    }
}

/// The stored config of an email connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailConnectionConfig {
    pub provider: Provider,
    /// A mailbox, `Name <address>` or a bare address, checked by lettre.
    pub from: String,
}

/// Why an instance's provider cannot send, naming the key to set; `None`
/// when it is configured.
fn provider_unconfigured(provider: Provider, instance: &Config) -> Option<String> {
    match provider {
        Provider::Resend => {
            let configured = instance
                .email
                .resend
                .api_key
                .as_ref()
                .is_some_and(|key| !key.expose().trim().is_empty());
            (!configured).then(|| {
                "the resend provider is not configured on this instance: the operator must set \
                 email.resend.api_key (SWITCHYARD_EMAIL__RESEND__API_KEY)"
                    .to_string()
            })
        }
        Provider::Smtp => {
            let configured = instance
                .email
                .smtp
                .host
                .as_ref()
                .is_some_and(|host| !host.trim().is_empty());
            (!configured).then(|| {
                "the smtp provider is not configured on this instance: the operator must set \
                 email.smtp.host (SWITCHYARD_EMAIL__SMTP__HOST)"
                    .to_string()
            })
        }
    }
}

/// Validates an email connection's config as the tenant sent it and returns
/// the config to store: `{"provider": "resend" | "smtp", "from": "…"}`.
pub fn validate_config(config: &Value, instance: &Config) -> Result<Value, String> {
    let map = config.as_object().ok_or_else(|| {
        "expected {\"provider\": \"resend\" | \"smtp\", \"from\": \"Name <address>\"}".to_string()
    })?;
    if let Some(key) = map
        .keys()
        .find(|key| !matches!(key.as_str(), "provider" | "from"))
    {
        return Err(format!(
            "unknown key {key:?}: an email connection takes only provider and from \
             (credentials are instance configuration, email.resend.* and email.smtp.*)"
        ));
    }
    let provider = match map.get("provider").and_then(Value::as_str) {
        Some("resend") => Provider::Resend,
        Some("smtp") => Provider::Smtp,
        Some(other) => {
            return Err(format!(
                "provider {other:?} is unknown: use \"resend\" or \"smtp\""
            ));
        }
        None => return Err("provider is required: \"resend\" or \"smtp\"".into()),
    };
    let from = map
        .get("from")
        .and_then(Value::as_str)
        .ok_or_else(|| "from is required, e.g. \"Alerts <alerts@example.com>\"".to_string())?;
    let mailbox = parse_mailbox(from)
        .map_err(|error| format!("from: {error}, e.g. \"Alerts <alerts@example.com>\""))?;
    if let Some(error) = provider_unconfigured(provider, instance) {
        return Err(error);
    }
    serde_json::to_value(EmailConnectionConfig {
        provider,
        from: mailbox.to_string(),
    })
    .map_err(|error| error.to_string())
}

pub(super) fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|error| format!("{text:?} is not an email address ({error})"))
}

/// Most recipients on one rule.
pub const MAX_RECIPIENTS: usize = 50;

/// Checks a rule's target `{"to": [...]}` with the same parser the send
/// uses, and returns it to store.
pub fn validate_target(target: &Value) -> Result<Value, Invalid> {
    let list = target
        .get("to")
        .and_then(Value::as_array)
        .filter(|to| !to.is_empty() && to.len() <= MAX_RECIPIENTS)
        .ok_or_else(|| Invalid::new("target.to", format!("1 to {MAX_RECIPIENTS} addresses")))?;
    for (index, address) in list.iter().enumerate() {
        let valid = address
            .as_str()
            .is_some_and(|text| text.len() <= 254 && parse_mailbox(text).is_ok());
        if !valid {
            return Err(Invalid::new(
                format!("target.to[{index}]"),
                "not an email address",
            ));
        }
    }
    Ok(json!({"to": list}))
}

/// The recipients of a rule's target `{"to": [...]}`.
pub fn recipients(target: &Value) -> Result<Vec<Mailbox>, String> {
    let list = target
        .get("to")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| {
            "no recipients: the rule's target needs {\"to\": [\"a@example.com\"]}".to_string()
        })?;
    list.iter()
        .enumerate()
        .map(|(index, address)| {
            let text = address
                .as_str()
                .ok_or_else(|| format!("target.to[{index}] is not a string"))?;
            parse_mailbox(text).map_err(|error| format!("target.to[{index}]: {error}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_by_the_parser_the_send_uses() {
        let ok = json!({"to": ["a@example.com", "Bee <b@example.com>"]});
        assert_eq!(validate_target(&ok), Ok(ok.clone()));
        assert!(recipients(&ok).is_ok());
        for (target, field) in [
            (
                json!({"to": ["a@example.com", "b@@example.com"]}),
                "target.to[1]",
            ),
            (json!({"to": [7]}), "target.to[0]"),
            (json!({"to": []}), "target.to"),
            (
                json!({"to": vec!["a@example.com"; MAX_RECIPIENTS + 1]}),
                "target.to",
            ),
            (Value::Null, "target.to"),
        ] {
            let refused = validate_target(&target).unwrap_err();
            assert_eq!(refused.field, field, "{target}");
        }
    }
}
