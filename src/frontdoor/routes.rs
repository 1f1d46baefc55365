//! Which host goes where (pure): the console's host to the supervisor's
//! console socket, each app's host to the loopback port its web container
//! publishes, a disabled app's host to a page that says so. The supervisor
//! computes this from the config and writes it for the front door, which
//! only looks hosts up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::model::AppName;

/// Where requests for one host go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Route {
    /// The console, onboarding pages and SSO, on the supervisor's socket.
    Console { socket: PathBuf },
    /// An app's web container.
    App { app: AppName, upstream: SocketAddr },
    /// An app that is not enabled on this box.
    Disabled { app: AppName },
}

/// Every configured host and its route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Routes {
    pub hosts: BTreeMap<String, Route>,
}

impl Routes {
    /// The routes a config wants. `console_socket` is where the supervisor
    /// serves the console.
    pub fn from_config(config: &Config, console_socket: &Path) -> Routes {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            config.console_host().to_string(),
            Route::Console {
                socket: console_socket.to_owned(),
            },
        );
        for app in AppName::ALL {
            let host = config.app_hostname(app);
            let route = if config.apps.enabled.contains(&app) {
                Route::App {
                    app,
                    upstream: SocketAddr::from(([127, 0, 0, 1], config.app_port(app))),
                }
            } else {
                Route::Disabled { app }
            };
            hosts.insert(host, route);
        }
        Routes { hosts }
    }

    /// The route for a request's `Host` (or `:authority`): case, a port and
    /// a trailing dot do not matter.
    pub fn route(&self, host: &str) -> Option<&Route> {
        self.hosts.get(&normalize_host(host)?)
    }

    /// The hostnames, for the certificate.
    pub fn hostnames(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }
}

/// `Box.Example.org.:443` → `box.example.org`; `None` for what is not a
/// DNS name (an IP literal or garbage has no route).
pub fn normalize_host(host: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        crate::config::testing::config("rpi5-8gb", extra)
    }

    #[test]
    fn every_host_has_its_route() {
        let c = config("[apps]\nenabled = [\"nextcloud\", \"discourse\"]\nport_base = 18080\n");
        let r = Routes::from_config(&c, Path::new("/run/cc/console.sock"));
        assert_eq!(
            r.hostnames(),
            [
                "box.quimper.example.org",
                "cloud.quimper.example.org",
                "forum.quimper.example.org",
                "office.quimper.example.org"
            ]
        );
        assert_eq!(
            r.route("box.quimper.example.org"),
            Some(&Route::Console {
                socket: "/run/cc/console.sock".into()
            })
        );
        assert_eq!(
            r.route("cloud.quimper.example.org"),
            Some(&Route::App {
                app: AppName::Nextcloud,
                upstream: "127.0.0.1:18080".parse().unwrap()
            })
        );
        assert_eq!(
            r.route("forum.quimper.example.org"),
            Some(&Route::App {
                app: AppName::Discourse,
                upstream: "127.0.0.1:18082".parse().unwrap()
            })
        );
        assert_eq!(
            r.route("office.quimper.example.org"),
            Some(&Route::Disabled {
                app: AppName::Collabora
            })
        );
    }

    #[test]
    fn hosts_match_whatever_the_case_port_or_trailing_dot() {
        let r = Routes::from_config(&config(""), Path::new("/s"));
        for h in [
            "CLOUD.Quimper.Example.Org",
            "cloud.quimper.example.org:443",
            "cloud.quimper.example.org.",
            "cloud.quimper.example.org.:8443",
        ] {
            assert!(
                matches!(
                    r.route(h),
                    Some(Route::App {
                        app: AppName::Nextcloud,
                        ..
                    })
                ),
                "{h}"
            );
        }
        for h in [
            "",
            "evil.example.com",
            "127.0.0.1",
            "[::1]:443",
            "cloud.quimper.example.org:x",
            "cloud..quimper.example.org",
            "cloud.quimper.example.org/x",
        ] {
            assert_eq!(r.route(h), None, "{h}");
        }
    }

    #[test]
    fn routes_survive_their_file_format() {
        let r = Routes::from_config(&config(""), Path::new("/run/cc/console.sock"));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Routes>(&text).unwrap(), r);
        assert!(text.contains(r#""kind":"console""#), "{text}");
    }
}
