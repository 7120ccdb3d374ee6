//! `GET /v1/capabilities`: what this instance can send through, so the
//! tenant UI offers only destinations that can work and says what the
//! operator must configure for the others. Read-only, from the config.

use super::openapi::{Forbidden, Unauthorized, Unavailable};
use super::{AppState, SecretKey};
use crate::config::Config;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(capabilities))
}

#[derive(Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"slack": true, "email": {"resend": true, "smtp": false}}))]
struct Capabilities {
    /// The Slack app is configured (`slack.client_id`, `slack.client_secret`): the OAuth install can finish.
    slack: bool,
    #[schema(inline)]
    email: EmailCapabilities,
}

#[derive(Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
struct EmailCapabilities {
    /// `email.resend.api_key` is set: email connections may use `"provider":"resend"`.
    resend: bool,
    /// `email.smtp.host` is set: email connections may use `"provider":"smtp"`.
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

/// What this instance can send through
///
/// Which destinations the operator has configured on this instance, so a
/// tenant UI offers only what can work: Slack needs `slack.client_id` and
/// `slack.client_secret` (the OAuth install), email needs
/// `email.resend.api_key` or `email.smtp.host`. Webhooks, PagerDuty, Teams
/// and Discord always work. Read-only, from the configuration.
#[utoipa::path(
    get,
    path = "/v1/capabilities",
    operation_id = "getCapabilities",
    tag = "embed",
    security(("secretKey" = []), ("embedSession" = [])),
    responses(
        (status = 200, description = "The instance's capabilities.", body = Capabilities),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
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
