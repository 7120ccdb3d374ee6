//! Outbound safety for tenant-supplied targets (webhook URLs).
//!
//! A tenant must not be able to make the server call its own loopback,
//! private network or cloud metadata service (SSRF). Two layers enforce it
//! unless `delivery.allow_private_networks` is set:
//!
//! - [`check_url`], at connection create time and again before every send,
//!   refuses bad schemes, credentials and forbidden IP literals (the client
//!   never calls the resolver for an IP literal, so this check is the only
//!   guard for them);
//! - [`check_resolved`], at connection create and update time, resolves a
//!   host name and refuses it when all its addresses are forbidden, so the
//!   tenant hears about it then rather than from a dead delivery;
//! - the tenant client ([`super::tenant_http::TenantHttp`]) resolves host
//!   names through [`GuardedResolver`], which drops forbidden addresses at
//!   connect time, so a name that resolved to a public address when the
//!   connection was created and to a private one now (DNS rebinding) is
//!   still refused. Redirects are never followed and no proxy is used,
//!   since either would route around the resolver check.
//!
//! Both resolve through [`TargetPolicy`]: names the operator pinned in
//! `delivery.hosts` take their listed addresses without a DNS query (the
//! guard still judges them), every other name goes to the system resolver.
//!
//! The operator's own configured API bases (Slack, Resend, PagerDuty) go through
//! [`trusted_client`] instead: no guard, so tests can point them at a fake on
//! loopback.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::Policy;

/// Why a tenant-supplied target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("webhook URL must use http or https")]
    Scheme,
    #[error("webhook URL must have a host")]
    NoHost,
    #[error("webhook URL must not contain credentials (user:password@); use a header instead")]
    Credentials,
    #[error("invalid webhook URL: {0}")]
    Invalid(String),
    #[error(
        "{host} resolves to a private or loopback address; \
         set delivery.allow_private_networks to allow it"
    )]
    Forbidden { host: String },
}

/// Whether `ip` is an address a tenant target must not reach: loopback,
/// private, link-local, unique-local, CGNAT, unspecified, multicast,
/// broadcast, reserved, documentation and benchmarking ranges, and cloud
/// metadata addresses. IPv6 forms that embed an IPv4 address (mapped,
/// compatible, translated, NAT64, 6to4) are judged by that IPv4 address.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

/// Parses and checks a tenant-supplied URL: http or https, a host, no
/// userinfo, and (unless `allow_private`) no forbidden IP literal as host.
/// Host names are checked later, at connect time, by [`GuardedResolver`].
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, TargetError> {
    let parsed = Url::parse(url.trim()).map_err(|e| TargetError::Invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(TargetError::Scheme);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let host = match parsed.host_str() {
        None | Some("") => return Err(TargetError::NoHost),
        Some(host) => host,
    };
    // The URL parser normalizes IPv4 spellings such as `0x7f.1` or
    // `2130706433` to `127.0.0.1` and writes IPv6 literals in brackets, so
    // parsing the normalized host finds every IP literal.
    check_literal(host, allow_private)?;
    Ok(parsed)
}

/// Refuses `host` if it is an IP literal (IPv6 in brackets or not) that a
/// tenant target must not reach, unless `allow_private`. A name passes:
/// the resolver judges it.
pub fn check_literal(host: &str, allow_private: bool) -> Result<(), TargetError> {
    if allow_private {
        return Ok(());
    }
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    match literal.unwrap_or(host).parse::<IpAddr>() {
        Ok(ip) if is_forbidden(ip) => Err(TargetError::Forbidden {
            host: host.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The request target of a URL [`check_url`] accepted, without its
/// fragment (never sent).
pub fn target_uri(mut url: Url) -> Result<http::Uri, TargetError> {
    url.set_fragment(None);
    url.as_str()
        .parse()
        .map_err(|error: http::uri::InvalidUri| TargetError::Invalid(error.to_string()))
}

/// The `Host` header of a request to `uri`: its host, with the port when it
/// is not the scheme's default. It is the value hyper-util's client writes
/// when a request has none; a sender that keeps its target per connection
/// (the webhook) makes it once there, as formatting it costs more per
/// request than the rest of the header map.
pub fn host_header(uri: &http::Uri) -> Option<http::HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(port) if port != default_port => {
            http::HeaderValue::from_str(&format!("{host}:{port}"))
        }
        _ => http::HeaderValue::from_str(host),
    };
    value.ok()
}

/// Addresses the operator pinned for tenant target host names
/// (`delivery.hosts`): looked up before DNS, like a hosts file for the
/// tenant client alone. Names are ASCII (punycode for IDNs), compared
/// without case or a trailing dot.
pub type StaticHosts = BTreeMap<String, Vec<IpAddr>>;

/// What tenant targets may reach and how their host names resolve: the
/// private-network setting and the operator's pinned addresses, shared by
/// the check when a connection is saved and the resolver at connect time.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    pub allow_private: bool,
    hosts: Arc<StaticHosts>,
}

impl TargetPolicy {
    /// Names resolve through DNS alone.
    pub fn new(allow_private: bool) -> Self {
        Self {
            allow_private,
            hosts: Arc::default(),
        }
    }

    /// The names in `hosts` resolve to their listed addresses, without DNS.
    /// A pinned address is judged like a resolved one.
    pub fn with_hosts(self, hosts: &StaticHosts) -> Self {
        let hosts = hosts
            .iter()
            .map(|(name, addresses)| (host_key(name), addresses.clone()))
            .collect();
        Self {
            hosts: Arc::new(hosts),
            ..self
        }
    }

    /// `host`'s addresses with `port`: its pinned addresses, else DNS's.
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        // No key to build when nothing is pinned (the usual case).
        let pinned = (!self.hosts.is_empty())
            .then(|| self.hosts.get(&host_key(host)))
            .flatten();
        if let Some(pinned) = pinned {
            return Ok(pinned.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// How a host name is matched against `delivery.hosts`.
fn host_key(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Longest wait for a name to resolve when a connection is saved.
pub const RESOLVE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `url`'s host name now (unless private targets are allowed)
/// and refuses it, as [`GuardedResolver`] would at connect time, when
/// every address it has is forbidden. A name that does not resolve (yet)
/// passes: the resolver checks again at every connect, which also covers
/// DNS rebinding.
pub async fn check_resolved(url: &str, policy: &TargetPolicy) -> Result<(), TargetError> {
    if policy.allow_private {
        return Ok(());
    }
    let parsed = check_url(url, policy.allow_private)?;
    let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
        return Ok(());
    };
    if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return Ok(()); // an IP literal, which check_url has judged
    }
    let lookup = tokio::time::timeout(RESOLVE_CHECK_TIMEOUT, policy.lookup(host, port)).await;
    judge_resolved(host, lookup.ok().and_then(Result::ok))
}

/// [`check_resolved`]'s verdict on what `host` resolved to (`None`: the
/// lookup failed or timed out).
fn judge_resolved(host: &str, addresses: Option<Vec<SocketAddr>>) -> Result<(), TargetError> {
    match addresses {
        Some(addresses)
            if !addresses.is_empty()
                && addresses.iter().all(|address| is_forbidden(address.ip())) =>
        {
            Err(TargetError::Forbidden {
                host: host.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// A DNS resolver that drops forbidden addresses (unless the policy
/// allows private targets) and fails with [`TargetError::Forbidden`] when
/// none are left. The tenant client resolves through it (`tenant_http.rs`).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

impl GuardedResolver {
    /// The addresses of `host` the guard lets through, with port 0 (the
    /// client substitutes the target's port).
    pub async fn resolve_host(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
        let resolved = self.policy.lookup(host, 0).await?;
        if resolved.is_empty() {
            let error = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} has no addresses"),
            );
            return Err(error.into());
        }
        let allow_private = self.policy.allow_private;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| allow_private || !is_forbidden(addr.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(Box::new(TargetError::Forbidden {
                host: host.to_owned(),
            }));
        }
        Ok(allowed)
    }
}

/// The client for the operator's own configured API bases (Slack, Resend):
/// trusted, so no address guard, but still no redirects.
pub fn trusted_client(timeout: Duration, idle_per_host: usize) -> reqwest::Result<reqwest::Client> {
    base_builder(timeout, idle_per_host).build()
}

/// The trusted client's settings; the tenant client (`tenant_http.rs`)
/// has the same user agent, redirects, timeouts and pool. `idle_per_host`
/// should be the most attempts that can be in flight at once
/// (`delivery.max_in_flight`): every connection that comes back idle is
/// then kept for the next attempt to the same host, where a smaller pool
/// closed the surplus after each burst and the next attempts paid a TCP
/// (and TLS) handshake each.
fn base_builder(timeout: Duration, idle_per_host: usize) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        // A 3xx is the receiver's answer; following it could lead anywhere.
        .redirect(Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(idle_per_host.max(1))
}

pub(super) const USER_AGENT: &str = concat!("switchyard/", env!("CARGO_PKG_VERSION"));

/// Receivers commonly close idle connections after 60–120 s.
pub(super) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Forbidden IPv4 networks as (network, prefix length).
const FORBIDDEN_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),        // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),       // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),    // CGNAT (RFC 6598); Alibaba metadata
    (Ipv4Addr::new(127, 0, 0, 0), 8),      // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),   // link-local; AWS/GCP/Azure metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),    // private (RFC 1918)
    (Ipv4Addr::new(192, 0, 0, 0), 24),     // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),     // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 168, 0, 0), 16),   // private (RFC 1918)
    (Ipv4Addr::new(198, 18, 0, 0), 15),    // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24),  // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),   // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),      // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),      // reserved, incl. broadcast
    (Ipv4Addr::new(168, 63, 129, 16), 32), // Azure platform (wireserver)
];

/// Forbidden IPv6 networks as (network, prefix length). Ranges that embed
/// an IPv4 address are handled by [`embedded_v4`] first.
const FORBIDDEN_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128), // unspecified
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128), // loopback
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32), // Teredo
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48), // benchmarking
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique-local; AWS metadata
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let bits = ip.to_bits();
    FORBIDDEN_V4.iter().any(|&(network, prefix)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        bits & mask == network.to_bits() & mask
    })
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_forbidden_v4(v4);
    }
    let bits = ip.to_bits();
    FORBIDDEN_V6.iter().any(|&(network, prefix)| {
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        bits & mask == network.to_bits() & mask
    })
}

/// The IPv4 address inside an IPv6 address that carries one and is routed
/// to it: IPv4-mapped `::ffff:0:0/96`, IPv4-translated `::ffff:0:0:0/96`,
/// IPv4-compatible `::/96` (except `::` and `::1`, which are IPv6's own
/// unspecified and loopback), NAT64 `64:ff9b::/96` and 6to4 `2002::/16`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    // Truncation is intended: the low 32 bits are the IPv4 address.
    let low32 = Ipv4Addr::from_bits(bits as u32);
    let high96 = bits >> 32;
    match high96 {
        0x0000_0000_0000_0000_0000_ffff | 0x0000_0000_0000_0000_ffff_0000 => Some(low32),
        0x0064_ff9b_0000_0000_0000_0000 => Some(low32),
        0 if bits > 1 => Some(low32),
        _ if bits >> 112 == 0x2002 => Some(Ipv4Addr::from_bits((bits >> 80) as u32)),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use http::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::tenant_http::{Answer, SendError, TenantHttp};
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn forbidden_addresses() {
        let table: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("172.15.255.255", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("100.100.100.200", true),
            ("100.128.0.1", false),
            ("0.0.0.0", true),
            ("255.255.255.255", true),
            ("224.0.0.1", true),
            ("192.0.2.5", true),
            ("198.18.0.1", true),
            ("168.63.129.16", true),
            ("8.8.8.8", false),
            ("1.1.1.1", false),
            ("::", true),
            ("::1", true),
            ("fe80::1", true),
            ("fc00::1", true),
            ("fd00:ec2::254", true),
            ("ff02::1", true),
            ("2001:db8::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("::127.0.0.1", true),
            ("::ffff:0:169.254.169.254", true),
            ("64:ff9b::a00:1", true),
            ("64:ff9b::808:808", false),
            ("2002:7f00:1::", true),
            ("2002:808:808::1", false),
            ("2606:4700::1111", false),
            ("2001:4860:4860::8888", false),
        ];
        for &(text, expected) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(is_forbidden(ip), expected, "{text}");
        }
    }

    #[test]
    fn check_url_cases() {
        assert_eq!(
            check_url("ftp://example.com/", false),
            Err(TargetError::Scheme)
        );
        assert!(matches!(
            check_url("not a url", false),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(
            check_url("http://", false),
            Err(TargetError::Invalid(_) | TargetError::NoHost)
        ));
        assert!(matches!(
            check_url("http://127.0.0.1/", false),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(check_url("http://127.0.0.1/", true).is_ok());
        // Other IPv4 spellings are normalized before the check.
        assert!(matches!(
            check_url("http://2130706433/", false),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            check_url("http://[::1]:8080/", false),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            check_url("http://[::ffff:169.254.169.254]/", false),
            Err(TargetError::Forbidden { .. })
        ));
        assert_eq!(
            check_url("https://user:pass@example.com/", false),
            Err(TargetError::Credentials)
        );
        assert_eq!(
            check_url("https://user@example.com/", true),
            Err(TargetError::Credentials)
        );
        // Names pass here; the resolver judges them at connect time.
        let url = check_url(" https://hooks.example.com/x?y=1 ", false).unwrap();
        assert_eq!(url.as_str(), "https://hooks.example.com/x?y=1");
        assert!(check_url("http://localhost:8080/", false).is_ok());
        assert!(check_url("http://8.8.8.8/", false).is_ok());
    }

    #[test]
    fn a_url_that_is_no_request_target_is_invalid() {
        // The URL parser takes any length, a request target at most 64 KiB.
        let long = format!("https://hooks.example.com/x?{}", "a".repeat(70_000));
        let url = check_url(&long, false).unwrap();
        assert!(matches!(target_uri(url), Err(TargetError::Invalid(_))));
        let url = check_url("https://hooks.example.com/x?y=1#part", false).unwrap();
        assert_eq!(target_uri(url).unwrap(), "https://hooks.example.com/x?y=1");
    }

    #[test]
    fn the_host_header_has_the_port_only_when_it_is_not_the_default() {
        for (url, expected) in [
            ("https://hooks.example.com/x", Some("hooks.example.com")),
            ("https://hooks.example.com:443/x", Some("hooks.example.com")),
            ("http://hooks.example.com:80/", Some("hooks.example.com")),
            (
                "http://hooks.example.com:443/",
                Some("hooks.example.com:443"),
            ),
            (
                "https://hooks.example.com:80/",
                Some("hooks.example.com:80"),
            ),
            ("http://127.0.0.1:8080/h", Some("127.0.0.1:8080")),
            ("http://[::1]:8080/h", Some("[::1]:8080")),
            ("/relative", None),
        ] {
            let host = host_header(&url.parse().unwrap());
            assert_eq!(
                host.as_ref().map(|value| value.to_str().unwrap()),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn forbidden_message_names_the_setting() {
        let message = TargetError::Forbidden {
            host: "10.0.0.1".into(),
        }
        .to_string();
        assert!(message.contains("10.0.0.1"));
        assert!(message.contains("delivery.allow_private_networks"));
    }

    /// A loopback HTTP server that records each request's path and answers
    /// every request with `response`.
    async fn serve(response: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split(' ').nth(1).unwrap_or_default().to_owned();
                    // Record before answering, so the client can't see the
                    // answer before the request is counted.
                    seen.lock().unwrap().push(path);
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (port, paths)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    /// An empty POST to `url` through the tenant client.
    async fn post(client: &TenantHttp, url: &str) -> Result<Answer, SendError> {
        client
            .post(url.parse().unwrap(), HeaderMap::new(), Vec::new())
            .await
    }

    #[tokio::test]
    async fn tenant_client_refuses_names_resolving_to_loopback() {
        let (port, paths) = serve(OK).await;
        let client = TenantHttp::new(TargetPolicy::new(false), TIMEOUT, 8).unwrap();
        let error = post(&client, &format!("http://localhost:{port}/"))
            .await
            .unwrap_err();
        let SendError::Refused(refused) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(
            *refused,
            TargetError::Forbidden {
                host: "localhost".into()
            }
        );
        assert!(error.to_string().starts_with("refused: localhost resolves"));
        assert!(paths.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn names_resolving_only_to_refused_addresses_are_refused_when_saved() {
        let guarded = TargetPolicy::new(false);
        assert_eq!(
            check_resolved("http://localhost:9/hook", &guarded).await,
            Err(TargetError::Forbidden {
                host: "localhost".into()
            })
        );
        assert_eq!(
            check_resolved("http://localhost:9/hook", &TargetPolicy::new(true)).await,
            Ok(())
        );
        // Unresolvable names pass: the connect-time guard still applies.
        assert_eq!(judge_resolved("gone.example", None), Ok(()));
        let private: SocketAddr = "10.1.2.3:443".parse().unwrap();
        let public: SocketAddr = "198.41.0.4:443".parse().unwrap();
        assert_eq!(
            judge_resolved("mixed.example", Some(vec![private, public])),
            Ok(())
        );
        assert_eq!(
            judge_resolved("inside.example", Some(vec![private])),
            Err(TargetError::Forbidden {
                host: "inside.example".into()
            })
        );
    }

    #[tokio::test]
    async fn pinned_hosts_resolve_without_dns_and_are_still_judged() {
        // `.invalid` names never resolve through DNS (RFC 6761); pinned,
        // they take their listed addresses.
        let hosts = StaticHosts::from([
            (
                "inside.invalid".to_string(),
                vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))],
            ),
            (
                "Outside.Invalid.".to_string(),
                vec![IpAddr::V4(Ipv4Addr::new(198, 41, 0, 4))],
            ),
            (
                "loop.invalid".to_string(),
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ),
        ]);
        let guarded = TargetPolicy::new(false).with_hosts(&hosts);
        assert_eq!(
            check_resolved("https://inside.invalid/hook", &guarded).await,
            Err(TargetError::Forbidden {
                host: "inside.invalid".into()
            })
        );
        // Matched without case or a trailing dot.
        assert_eq!(
            check_resolved("https://outside.invalid./hook", &guarded).await,
            Ok(())
        );
        let resolver = GuardedResolver { policy: guarded };
        let addresses = resolver.resolve_host("OUTSIDE.invalid").await.unwrap();
        assert_eq!(addresses, ["198.41.0.4:0".parse::<SocketAddr>().unwrap()]);
        let error = resolver.resolve_host("inside.invalid").await.unwrap_err();
        assert!(error.downcast_ref::<TargetError>().is_some(), "{error}");
        // A name with no address passes when saved (as one that does not
        // resolve does) and fails at connect time.
        let empty = StaticHosts::from([("none.invalid".to_string(), Vec::new())]);
        let policy = TargetPolicy::new(false).with_hosts(&empty);
        assert_eq!(
            check_resolved("https://none.invalid/", &policy).await,
            Ok(())
        );
        let resolver = GuardedResolver { policy };
        let error = resolver.resolve_host("none.invalid").await.unwrap_err();
        assert!(error.to_string().contains("has no addresses"), "{error}");

        // The tenant client connects to the pinned address.
        let (port, paths) = serve(OK).await;
        let client =
            TenantHttp::new(TargetPolicy::new(true).with_hosts(&hosts), TIMEOUT, 8).unwrap();
        let answer = post(&client, &format!("http://loop.invalid:{port}/pinned"))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(*paths.lock().unwrap(), ["/pinned"]);
        // With the guard on, the same pinned loopback address is refused.
        let guarded =
            TenantHttp::new(TargetPolicy::new(false).with_hosts(&hosts), TIMEOUT, 8).unwrap();
        let error = post(&guarded, &format!("http://loop.invalid:{port}/pinned"))
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::Refused(_)), "{error}");
        assert_eq!(paths.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn tenant_client_reaches_loopback_when_allowed() {
        let (port, paths) = serve(OK).await;
        let client = TenantHttp::new(TargetPolicy::new(true), TIMEOUT, 8).unwrap();
        let answer = post(&client, &format!("http://localhost:{port}/hook"))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(*paths.lock().unwrap(), ["/hook"]);
    }

    #[tokio::test]
    async fn redirects_are_returned_not_followed() {
        const REDIRECT: &str = "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\n\
                                content-length: 0\r\nconnection: close\r\n\r\n";
        let (port, paths) = serve(REDIRECT).await;
        let client = TenantHttp::new(TargetPolicy::new(true), TIMEOUT, 8).unwrap();
        let answer = post(&client, &format!("http://localhost:{port}/"))
            .await
            .unwrap();
        assert_eq!(answer.status, 302);
        assert_eq!(*paths.lock().unwrap(), ["/"]);

        let trusted = trusted_client(TIMEOUT, 8).unwrap();
        let response = trusted
            .get(format!("http://127.0.0.1:{port}/api"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        assert_eq!(*paths.lock().unwrap(), ["/", "/api"]);
    }

    #[tokio::test]
    async fn trusted_client_reaches_loopback_names() {
        let (port, _paths) = serve(OK).await;
        let client = trusted_client(TIMEOUT, 8).unwrap();
        let response = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("content-length")
                .is_some_and(|v| v == "0")
        );
    }

    /// The head (lowercased) of the first request `send` makes to a new
    /// loopback listener, given its port; answered with an empty 200.
    pub(crate) async fn first_request_head(send: impl AsyncFnOnce(u16)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0);
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(OK.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap().to_ascii_lowercase()
        });
        send(port).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn user_agent_names_switchyard() {
        let expected = format!("user-agent: switchyard/{}\r\n", env!("CARGO_PKG_VERSION"));
        let tenant = TenantHttp::new(TargetPolicy::new(true), TIMEOUT, 8).unwrap();
        let request = first_request_head(async |port| {
            post(&tenant, &format!("http://127.0.0.1:{port}/"))
                .await
                .unwrap();
        })
        .await;
        assert!(request.contains(&expected), "{request}");
        let trusted = trusted_client(TIMEOUT, 8).unwrap();
        let request = first_request_head(async |port| {
            let url = format!("http://127.0.0.1:{port}/");
            trusted.get(url).send().await.unwrap();
        })
        .await;
        assert!(request.contains(&expected), "{request}");
    }

    #[tokio::test]
    async fn resolver_filters_and_refuses() {
        let refused = GuardedResolver {
            policy: TargetPolicy::new(false),
        }
        .resolve_host("localhost")
        .await;
        let Err(error) = refused else {
            panic!("localhost must be refused");
        };
        assert_eq!(
            error.downcast_ref::<TargetError>(),
            Some(&TargetError::Forbidden {
                host: "localhost".into()
            })
        );

        let allowed = GuardedResolver {
            policy: TargetPolicy::new(true),
        }
        .resolve_host("localhost")
        .await
        .unwrap();
        let ips: Vec<IpAddr> = allowed.iter().map(|addr| addr.ip()).collect();
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
    }
}
