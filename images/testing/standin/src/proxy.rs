//! How Nextcloud sees a request that came through a reverse proxy, as
//! upstream computes it (`lib/private/AppFramework/Http/Request.php`,
//! `TrustedDomainHelper`), with the official apache image in front
//! (`mod_remoteip` with `RemoteIPHeader X-Real-IP` and the private ranges as
//! internal proxies, unless `APACHE_DISABLE_REWRITE_IP` is set) and its
//! `config/reverse-proxy.config.php` (the `TRUSTED_PROXIES`,
//! `FORWARDED_FOR_HEADERS`, `OVERWRITE*` variables, space-separated lists).
//!
//! Upstream silently ignores a proxy entry it cannot parse, a header name
//! that is not a PHP lookup string (`HTTP_X_FORWARDED_FOR`) or a protocol
//! it does not know; the stand-in refuses them at start, so a wrong value
//! fails a test instead of quietly trusting nobody.

use std::net::IpAddr;

use serde_json::Value;

/// What the request handling reads from config.php (`system`) and the
/// environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    pub trusted_proxies: Vec<String>,
    pub forwarded_for_headers: Vec<String>,
    pub overwritehost: String,
    pub overwriteprotocol: String,
    pub overwritecondaddr: String,
    pub overwrite_cli_url: String,
    pub trusted_domains: Vec<String>,
    /// The image's `mod_remoteip` (on unless `APACHE_DISABLE_REWRITE_IP`).
    pub apache_rewrite_ip: bool,
}

/// A list in config.php: an array, or an object keyed by index (what `occ
/// config:system:set name <i>` makes).
fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Value::Object(o) => o
            .values()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// `array_filter(array_map('trim', explode(' ', $v)))`.
fn words(v: &str) -> Vec<String> {
    v.split(' ')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ProxyConfig {
    /// config.php's `system` values, overridden by the environment as the
    /// image's `reverse-proxy.config.php` does (`env` looks a variable up).
    pub fn new(system: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let text = |key: &str| system[key].as_str().unwrap_or_default().to_owned();
        let mut c = ProxyConfig {
            trusted_proxies: list(&system["trusted_proxies"]),
            forwarded_for_headers: list(&system["forwarded_for_headers"]),
            overwritehost: text("overwritehost"),
            overwriteprotocol: text("overwriteprotocol"),
            overwritecondaddr: text("overwritecondaddr"),
            overwrite_cli_url: text("overwrite.cli.url"),
            trusted_domains: list(&system["trusted_domains"]),
            apache_rewrite_ip: env("APACHE_DISABLE_REWRITE_IP").is_none(),
        };
        if let Some(v) = set("TRUSTED_PROXIES") {
            c.trusted_proxies = words(&v);
        }
        if let Some(v) = set("FORWARDED_FOR_HEADERS") {
            c.forwarded_for_headers = words(&v);
        }
        for (var, field) in [
            ("OVERWRITEHOST", &mut c.overwritehost),
            ("OVERWRITEPROTOCOL", &mut c.overwriteprotocol),
            ("OVERWRITECONDADDR", &mut c.overwritecondaddr),
            ("OVERWRITECLIURL", &mut c.overwrite_cli_url),
        ] {
            if let Some(v) = set(var) {
                *field = v;
            }
        }
        if c.forwarded_for_headers.is_empty() {
            // Upstream's only default: nothing insecure out of the box.
            c.forwarded_for_headers = vec!["HTTP_X_FORWARDED_FOR".into()];
        }
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), String> {
        for p in &self.trusted_proxies {
            if !valid_proxy(p) {
                return Err(format!(
                    "stand-in: trusted_proxies entry {p:?} is not an IP address or a CIDR range (upstream would silently trust nobody for it)"
                ));
            }
        }
        for h in &self.forwarded_for_headers {
            let ok = h.strip_prefix("HTTP_").is_some_and(|r| {
                !r.is_empty()
                    && r.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
            if !ok {
                return Err(format!(
                    "stand-in: forwarded_for_headers entry {h:?} is not a PHP lookup string such as HTTP_X_FORWARDED_FOR"
                ));
            }
        }
        if !["", "http", "https"].contains(&self.overwriteprotocol.as_str()) {
            return Err(format!(
                "stand-in: overwriteprotocol must be http or https, not {:?}",
                self.overwriteprotocol
            ));
        }
        if self.overwritehost.contains("://") || self.overwritehost.contains('/') {
            return Err(format!(
                "stand-in: overwritehost is a host name (and port), not {:?}",
                self.overwritehost
            ));
        }
        let cli = &self.overwrite_cli_url;
        if !(cli.is_empty() || cli.starts_with("https://") || cli.starts_with("http://")) {
            return Err(format!(
                "stand-in: overwrite.cli.url must be a URL, not {cli:?}"
            ));
        }
        Ok(())
    }

    fn overwrite_condition(&self, remote_addr: &str) -> bool {
        // Upstream: preg_match('/' . overwritecondaddr . '/', REMOTE_ADDR);
        // the stand-in takes it as a literal substring.
        self.overwritecondaddr.is_empty() || remote_addr.contains(&self.overwritecondaddr)
    }

    fn is_trusted_proxy(&self, addr: &str) -> bool {
        let Ok(ip) = addr.parse::<IpAddr>() else {
            return false;
        };
        self.trusted_proxies.iter().any(|p| ip_matches(ip, p))
    }
}

fn valid_proxy(p: &str) -> bool {
    match p.split_once('/') {
        None => p.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    }
}

/// Whether `ip` is the address or in the CIDR range `spec`.
pub fn ip_matches(ip: IpAddr, spec: &str) -> bool {
    let (net, bits) = match spec.split_once('/') {
        None => (spec, None),
        Some((n, b)) => (n, b.parse::<u32>().ok()),
    };
    match (ip.to_canonical(), net.parse::<IpAddr>()) {
        (IpAddr::V4(a), Ok(IpAddr::V4(n))) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), Ok(IpAddr::V6(n))) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The image's mod_remoteip: `RemoteIPHeader X-Real-IP`, trusting a peer
/// in 10/8, 172.16/12 or 192.168/16.
const APACHE_INTERNAL_PROXIES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// How Nextcloud sees one request: `peer` is the TCP peer, `header` looks a
/// request header up by its lower-case name.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// `$_SERVER['REMOTE_ADDR']`, after Apache.
    pub remote_addr: String,
    /// `IRequest::getRemoteAddress()`: the client, for logs, brute-force
    /// protection and sessions.
    pub remote_address: String,
    /// `getServerProtocol()`.
    pub protocol: String,
    /// `getServerHost()`: the host in absolute URLs.
    pub host: String,
    /// `getInsecureServerHost()`: the host checked against trusted_domains.
    pub insecure_host: String,
    pub trusted_domain: bool,
}

pub fn seen(peer: IpAddr, header: &dyn Fn(&str) -> Option<String>, c: &ProxyConfig) -> Seen {
    let peer = peer.to_canonical();
    let remote_addr = match header("x-real-ip") {
        Some(real)
            if c.apache_rewrite_ip
                && APACHE_INTERNAL_PROXIES.iter().any(|r| ip_matches(peer, r))
                && real.trim().parse::<IpAddr>().is_ok() =>
        {
            real.trim().to_owned()
        }
        _ => peer.to_string(),
    };
    let from_proxy = c.is_trusted_proxy(&remote_addr);

    let mut remote_address = remote_addr.clone();
    if from_proxy {
        // Upstream reads the headers, and each one's addresses, from the
        // last: the first that is not a trusted proxy is the client.
        'headers: for h in c.forwarded_for_headers.iter().rev() {
            let name = h
                .trim_start_matches("HTTP_")
                .replace('_', "-")
                .to_ascii_lowercase();
            let Some(v) = header(&name) else { continue };
            for ip in v.split(',').rev() {
                let ip = strip_port(ip.trim());
                if c.is_trusted_proxy(&ip) {
                    continue;
                }
                if ip.parse::<IpAddr>().is_ok() {
                    remote_address = ip;
                    break 'headers;
                }
            }
        }
    }

    let overwrite = c.overwrite_condition(&remote_addr);
    let protocol = if !c.overwriteprotocol.is_empty() && overwrite {
        c.overwriteprotocol.to_ascii_lowercase()
    } else if let (true, Some(p)) = (from_proxy, header("x-forwarded-proto")) {
        let p = p
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if p == "https" {
            "https".into()
        } else {
            "http".into()
        }
    } else {
        "http".into()
    };

    let overwritehost = (!c.overwritehost.is_empty() && overwrite).then(|| c.overwritehost.clone());
    let insecure_host = match (&overwritehost, from_proxy) {
        (Some(h), true) => h.clone(),
        _ => match (from_proxy, header("x-forwarded-host")) {
            (true, Some(h)) => h.split(',').next().unwrap_or("").trim().to_owned(),
            _ => header("host").unwrap_or_else(|| "localhost".into()),
        },
    };
    let trusted_domain = is_trusted_domain(&insecure_host, c);
    let host = match &overwritehost {
        Some(h) => h.clone(),
        None if trusted_domain => insecure_host.clone(),
        None => c.trusted_domains.first().cloned().unwrap_or_default(),
    };
    Seen {
        remote_addr,
        remote_address,
        protocol,
        host,
        insecure_host,
        trusted_domain,
    }
}

/// `1.2.3.4:5678` or `[::1]:5678` without the port.
fn strip_port(ip: &str) -> String {
    match ip.matches(':').count() {
        0 => ip.to_owned(),
        1 => ip.split(':').next().unwrap_or("").to_owned(),
        _ => ip
            .strip_prefix('[')
            .and_then(|r| r.split(']').next())
            .unwrap_or(ip)
            .to_owned(),
    }
}

/// `TrustedDomainHelper::isTrustedDomain`: localhost always; otherwise the
/// host without its port matches an entry (`*` a wildcard), whatever the
/// case.
pub fn is_trusted_domain(host_with_port: &str, c: &ProxyConfig) -> bool {
    let host = if host_with_port.starts_with('[') {
        host_with_port
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host_with_port.split(':').next().unwrap_or("").to_owned()
    };
    let host = host.to_ascii_lowercase();
    if ["localhost", "127.0.0.1", "[::1]"].contains(&host.as_str()) {
        return true;
    }
    c.trusted_domains.iter().any(|d| {
        let d = d.to_ascii_lowercase();
        let d = d.split(':').next().unwrap_or("");
        match d.split_once('*') {
            None => d == host,
            Some((pre, post)) => {
                host.len() >= pre.len() + post.len()
                    && host.starts_with(pre)
                    && host.ends_with(post)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GATEWAY: &str = "172.30.64.1";

    fn front_door(name: &str) -> Option<String> {
        match name {
            "host" => Some("cloud.example.org".into()),
            "x-forwarded-for" | "x-real-ip" => Some("203.0.113.7".into()),
            "x-forwarded-proto" => Some("https".into()),
            "x-forwarded-host" => Some("cloud.example.org".into()),
            _ => None,
        }
    }

    fn config(env: &[(&str, &str)]) -> Result<ProxyConfig, String> {
        let system = json!({"trusted_domains": {"0": "cloud.example.org"}});
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyConfig::new(&system, &move |n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
    }

    fn catalog() -> ProxyConfig {
        config(&[
            ("TRUSTED_PROXIES", GATEWAY),
            ("FORWARDED_FOR_HEADERS", "HTTP_X_FORWARDED_FOR"),
            ("OVERWRITEHOST", "cloud.example.org"),
            ("OVERWRITEPROTOCOL", "https"),
            ("OVERWRITECLIURL", "https://cloud.example.org"),
            ("APACHE_DISABLE_REWRITE_IP", "1"),
        ])
        .unwrap()
    }

    #[test]
    fn the_client_comes_from_x_forwarded_for_only_through_a_trusted_proxy() {
        let c = catalog();
        let s = seen(GATEWAY.parse().unwrap(), &front_door, &c);
        assert_eq!(s.remote_addr, GATEWAY);
        assert_eq!(s.remote_address, "203.0.113.7");
        assert_eq!(
            (s.protocol.as_str(), s.host.as_str()),
            ("https", "cloud.example.org")
        );
        assert!(s.trusted_domain);
        // Another container on the bridge is no proxy: its header is ignored.
        let s = seen("172.30.64.9".parse().unwrap(), &front_door, &c);
        assert_eq!(s.remote_address, "172.30.64.9");
        // overwrite* apply whatever the peer (overwritecondaddr is empty).
        assert_eq!(s.protocol, "https");
    }

    #[test]
    fn without_the_settings_nextcloud_sees_the_proxy_and_http() {
        let c = config(&[("APACHE_DISABLE_REWRITE_IP", "1")]).unwrap();
        let s = seen(GATEWAY.parse().unwrap(), &front_door, &c);
        assert_eq!(s.remote_address, GATEWAY);
        assert_eq!(s.protocol, "http");
        // A wrong header name trusts the proxy for nothing.
        let c = config(&[
            ("TRUSTED_PROXIES", GATEWAY),
            ("FORWARDED_FOR_HEADERS", "HTTP_X_REAL_IP_NOT_SENT"),
            ("APACHE_DISABLE_REWRITE_IP", "1"),
        ])
        .unwrap();
        let s = seen(GATEWAY.parse().unwrap(), &front_door, &c);
        assert_eq!(s.remote_address, GATEWAY);
        // Trusted, the proxy's X-Forwarded-Proto counts.
        assert_eq!(s.protocol, "https");
    }

    #[test]
    fn apache_rewrites_from_x_real_ip_for_private_peers_unless_disabled() {
        let c = config(&[]).unwrap();
        let s = seen(GATEWAY.parse().unwrap(), &front_door, &c);
        assert_eq!(s.remote_addr, "203.0.113.7");
        let s = seen("198.51.100.1".parse().unwrap(), &front_door, &c);
        assert_eq!(s.remote_addr, "198.51.100.1");
    }

    #[test]
    fn wrong_values_are_refused() {
        for (k, v) in [
            ("TRUSTED_PROXIES", "172.30.64.1/33"),
            ("TRUSTED_PROXIES", "gateway"),
            ("FORWARDED_FOR_HEADERS", "X-Forwarded-For"),
            ("OVERWRITEPROTOCOL", "HTTPS://"),
            ("OVERWRITEHOST", "https://cloud.example.org"),
            ("OVERWRITECLIURL", "cloud.example.org"),
        ] {
            assert!(config(&[(k, v)]).is_err(), "{k}={v}");
        }
        assert!(config(&[("TRUSTED_PROXIES", "172.30.64.0/24 ::1 fd00::/8")]).is_ok());
    }

    #[test]
    fn ranges_and_trusted_domains() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ip_matches(ip("172.30.64.1"), "172.30.64.0/24"));
        assert!(!ip_matches(ip("172.30.65.1"), "172.30.64.0/24"));
        assert!(ip_matches(ip("10.1.2.3"), "0.0.0.0/0"));
        assert!(ip_matches(ip("::ffff:172.30.64.1"), "172.30.64.1"));
        let c = catalog();
        assert!(is_trusted_domain("Cloud.Example.org:443", &c));
        assert!(is_trusted_domain("127.0.0.1:8080", &c));
        assert!(!is_trusted_domain("evil.example.com", &c));
    }
}
