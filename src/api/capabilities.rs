//! `GET /v1/capabilities`: what this instance can send through, so the
//! tenant UI offers only destinations that can work and says what the
//! operator must configure for the others. Read-only, from the config.

use super::{AppState, SecretKey};
use crate::config::Config;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/capabilities", get(capabilities))
}

#[derive(Debug, PartialEq, Eq, Serialize)]
struct Capabilities {
    /// The Slack app is set up, so the OAuth install can finish.
    slack: bool,
    email: EmailCapabilities,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
struct EmailCapabilities {
    resend: bool,
    smtp: bool,
}

impl Capabilities {
    /// The same tests the destinations apply when a connection is created
    /// or an install finishes: a key that is set and not blank.
    fn of(config: &Config) -> Self {
        let set = |value: Option<&str>| value.is_some_and(|value| !value.trim().is_empty());
        let slack = &config.slack;
        let email = &config.email;
        Self {
            slack: set(slack.client_id.as_deref())
                && set(slack.client_secret.as_ref().map(|secret| secret.expose())),
            email: EmailCapabilities {
                resend: set(email.resend.api_key.as_ref().map(|key| key.expose())),
                smtp: set(email.smtp.host.as_deref()),
            },
        }
    }
}

async fn capabilities(State(app): State<AppState>, _: SecretKey) -> Json<Capabilities> {
    Json(Capabilities::of(app.config()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn a_bare_config_can_do_neither_slack_nor_email() {
        let config = Config::defaults().unwrap();
        let capabilities = Capabilities::of(&config);
        assert!(!capabilities.slack);
        assert_eq!(
            capabilities.email,
            EmailCapabilities {
                resend: false,
                smtp: false
            }
        );
    }

    #[test]
    fn each_capability_needs_its_keys_set_and_not_blank() {
        let mut config = Config::defaults().unwrap();
        config.slack.client_id = Some("123.456".into());
        assert!(!Capabilities::of(&config).slack, "no client secret yet");
        config.slack.client_secret = Some(Secret::new(" "));
        assert!(!Capabilities::of(&config).slack, "a blank secret");
        config.slack.client_secret = Some(Secret::new("shh"));
        assert!(Capabilities::of(&config).slack);

        config.email.resend.api_key = Some(Secret::new("re_123"));
        config.email.smtp.host = Some("".into());
        assert_eq!(
            Capabilities::of(&config).email,
            EmailCapabilities {
                resend: true,
                smtp: false
            }
        );
        config.email.smtp.host = Some("smtp.example.com".into());
        assert!(Capabilities::of(&config).email.smtp);
    }
}
