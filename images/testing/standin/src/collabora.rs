//! The Collabora Online stand-in (`collabora/code`): refuses to start
//! without the WOPI host allow-list, the public name and TLS ending at the
//! proxy; serves `/hosting/discovery` and `/hosting/capabilities` on 9980.

use std::sync::Arc;

use serde_json::json;

use crate::net::{self, Request, Response};
use crate::{Ctx, R, fail};

const VERSION: &str = "25.04.5.1";

pub fn main(_args: &[String]) -> R<i32> {
    if crate::euid() == 0 {
        return fail("coolwsd: Don't run this as root (the image runs as uid 100, cool)");
    }
    // coolforkit gets cap_mknod (and cap_sys_chroot, cap_chown,
    // cap_fowner) from its file capabilities, which only work within the
    // container's bounding set: without MKNOD its jails have no /dev.
    if let Some(missing) = crate::missing_caps(&[(27, "MKNOD")])? {
        return fail(format!(
            "coolwsd: coolforkit lacks the {missing} capability: run the container with --cap-add {missing}"
        ));
    }
    let aliases: Vec<String> = (1..10)
        .filter_map(|i| crate::env(&format!("aliasgroup{i}")))
        .filter(|v| !v.is_empty())
        .collect();
    if aliases.is_empty() {
        return fail("coolwsd: no WOPI host allowed: set aliasgroup1=https://<nextcloud host>:443");
    }
    for a in &aliases {
        for alias in a.split(',') {
            let ok = alias
                .split_once("://")
                .is_some_and(|(s, h)| (s == "https" || s == "http") && !h.is_empty());
            if !ok {
                return fail(format!(
                    "coolwsd: aliasgroup value {alias:?} must look like https://cloud.example.org:443"
                ));
            }
        }
    }
    let server_name = crate::env("server_name").unwrap_or_default();
    if server_name.is_empty() || server_name.contains("://") || server_name.contains('/') {
        return fail(format!(
            "stand-in coolwsd: server_name must be the public host name (e.g. office.example.org), got {server_name:?}"
        ));
    }
    let extra = crate::env("extra_params").unwrap_or_default();
    let params: Vec<&str> = extra.split_whitespace().collect();
    for p in &params {
        if !p.starts_with("--o:") || !p.contains('=') {
            return fail(format!(
                "coolwsd: unknown extra parameter {p:?} (expected --o:<key>=<value>)"
            ));
        }
    }
    for need in ["--o:ssl.enable=false", "--o:ssl.termination=true"] {
        if !params.contains(&need) {
            return fail(format!(
                "stand-in coolwsd: extra_params must contain {need} (TLS ends at the proxy), got {extra:?}"
            ));
        }
    }
    if crate::env("username").is_some_and(|u| !u.is_empty())
        && crate::env("password").is_none_or(|p| p.is_empty())
    {
        return fail("coolwsd: the admin console needs both username and password");
    }
    let server_name = Arc::new(server_name);
    let handler = Arc::new(move |req: &Request| -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => Response::text(200, "OK"),
            ("GET", "/hosting/discovery") => {
                Response::new(200, "text/xml", discovery(&server_name))
            }
            ("GET", "/hosting/capabilities") => Response::json(
                200,
                &json!({
                    "convert-to": {"available": true, "endpoint": "/cool/convert-to"},
                    "hasMobileSupport": true,
                    "hasProxyPrefix": false,
                    "hasTemplateSaveAs": false,
                    "hasTemplateSource": true,
                    "hasWASMSupport": false,
                    "hasZoteroSupport": true,
                    "hasWopiAccessCheck": true,
                    "productName": "Collabora Online Development Edition",
                    "productVersion": VERSION,
                    "productVersionHash": "standin",
                    "serverId": "standin",
                }),
            ),
            _ => Response::text(404, "Not Found"),
        }
    });
    println!(
        "coolwsd (stand-in) {VERSION}: ready on port 9980 for {}",
        aliases.join(" ")
    );
    net::serve(9980, handler).ctx("coolwsd: cannot listen on 9980")?;
    Ok(1)
}

fn discovery(server_name: &str) -> String {
    let src = format!("https://{server_name}/browser/standin/cool.html?");
    let app = |name: &str, exts: &[&str]| {
        let actions: String = exts
            .iter()
            .map(|e| {
                format!(
                    "      <action default=\"true\" ext=\"{e}\" name=\"edit\" urlsrc=\"{src}\"/>\n"
                )
            })
            .collect();
        format!("    <app name=\"{name}\">\n{actions}    </app>\n")
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<wopi-discovery>\n  <net-zone name=\"external-http\">\n{}{}{}    <app name=\"Capabilities\">\n      <action ext=\"\" name=\"getinfo\" urlsrc=\"https://{server_name}/hosting/capabilities\"/>\n    </app>\n  </net-zone>\n  <proof-key exponent=\"AQAB\" modulus=\"standin\" oldexponent=\"AQAB\" oldmodulus=\"standin\" oldvalue=\"standin\" value=\"standin\"/>\n</wopi-discovery>\n",
        app("writer", &["odt", "docx", "doc", "rtf", "txt"]),
        app("calc", &["ods", "xlsx", "xls", "csv"]),
        app("impress", &["odp", "pptx", "ppt"]),
    )
}
