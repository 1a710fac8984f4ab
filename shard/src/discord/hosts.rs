//! Which gateway hosts a shard may send the bot token to.
//!
//! A RESUME goes to the `resume_gateway_url` Discord gave in READY. The pod keeps it in fleet
//! state so its replacement can resume, but fleet state is shared infrastructure (Redis), not
//! trusted with secrets: anyone able to write it could point the next pod at their own host
//! and receive the bot token. So a saved URL is used only if it is `wss://` on one of
//! Discord's gateway hosts (or the gateway the pod was configured with, e.g. the simulator);
//! otherwise the session is resumed through the configured gateway and the refusal is logged.

/// Discord's gateway domain: `gateway.discord.gg`, `gateway-us-east1-b.discord.gg`, ….
pub const DISCORD_GATEWAY_HOSTS: &[&str] = &["discord.gg"];

/// Hosts a saved resume URL may point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayHosts {
    /// A host and every subdomain of it (`discord.gg` allows `gateway-us-east1-b.discord.gg`).
    domains: Vec<String>,
    /// The configured gateway (`scheme://host:port`), allowed exactly, `ws://` included.
    configured: Option<(String, String, Option<u16>)>,
}

impl Default for GatewayHosts {
    fn default() -> Self {
        Self::new(DISCORD_GATEWAY_HOSTS.iter().copied(), None)
    }
}

impl GatewayHosts {
    /// `domains` (each with its subdomains, over `wss://` only) and the gateway the pod is
    /// configured with (`DISCORD_GATEWAY_URL`: allowed with its own scheme, host and port).
    pub fn new<'a>(domains: impl IntoIterator<Item = &'a str>, configured: Option<&str>) -> Self {
        Self {
            domains: domains
                .into_iter()
                .map(|d| d.trim().trim_start_matches("*.").to_ascii_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            configured: configured.and_then(|u| {
                let u = url::Url::parse(u).ok()?;
                Some((
                    u.scheme().to_string(),
                    u.host_str()?.to_ascii_lowercase(),
                    u.port_or_known_default(),
                ))
            }),
        }
    }

    /// Whether the bot token may be sent to `url`; the error names the host (never the URL's
    /// query or credentials) and why.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| "a URL without a host".to_string())?
            .to_ascii_lowercase();
        // Named in errors by host and port: never the path, query or credentials.
        let shown = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("{shown}: a URL with credentials"));
        }
        if let Some((scheme, h, port)) = &self.configured
            && parsed.scheme() == scheme
            && host == *h
            && parsed.port_or_known_default() == *port
        {
            return Ok(());
        }
        if parsed.scheme() != "wss" {
            return Err(format!(
                "{shown}: scheme {} (only wss:// leaves the pod)",
                parsed.scheme()
            ));
        }
        let allowed = self.domains.iter().any(|d| {
            host == *d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!("{shown} is not an allowed gateway host"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discord_hosts_pass_and_others_do_not() {
        let hosts = GatewayHosts::default();
        assert!(hosts.check("wss://gateway-us-east1-b.discord.gg").is_ok());
        assert!(
            hosts
                .check("wss://gateway.discord.gg/?v=10&encoding=json")
                .is_ok()
        );
        assert!(hosts.check("wss://discord.gg").is_ok());
        for bad in [
            "wss://evil.example",
            "wss://discord.gg.evil.example",
            "wss://notdiscord.gg",
            "ws://gateway.discord.gg",
            "wss://user:pw@gateway.discord.gg",
            "gateway.discord.gg",
            "",
        ] {
            assert!(hosts.check(bad).is_err(), "{bad} was allowed");
        }
        let err = hosts.check("wss://evil.example/?token=abc").unwrap_err();
        assert!(
            err.contains("evil.example") && !err.contains("abc"),
            "{err}"
        );
    }

    #[test]
    fn the_configured_gateway_is_allowed_exactly() {
        let hosts = GatewayHosts::new(["discord.gg"], Some("ws://127.0.0.1:4000"));
        assert!(hosts.check("ws://127.0.0.1:4000/?v=10").is_ok());
        assert!(hosts.check("ws://127.0.0.1:4001").is_err());
        assert!(hosts.check("ws://127.0.0.2:4000").is_err());
        assert!(hosts.check("wss://127.0.0.1:4000").is_err());
    }
}
