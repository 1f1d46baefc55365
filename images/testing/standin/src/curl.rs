//! `curl`, enough for health checks and tests: `-f -s -S -o FILE -X METHOD
//! -H HEADER -d DATA -i -L`, plain http only, curl's exit codes (7: no
//! connection, 22: HTTP error with -f).

use std::time::Duration;

use crate::{R, fail_code, net};

pub fn main(args: &[String]) -> R<i32> {
    let mut fail_http = false;
    let mut silent = false;
    let mut show_error = false;
    let mut include = false;
    let mut follow = false;
    let mut out: Option<String> = None;
    let mut method: Option<String> = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut data: Option<String> = None;
    let mut url: Option<String> = None;
    let mut timeout = 30u64;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let mut value = |name: &str| -> R<String> {
            let v = args.get(i).cloned();
            i += 1;
            v.ok_or_else(|| crate::Fail {
                code: 2,
                msg: format!("curl: option {name}: requires parameter"),
            })
        };
        match a.as_str() {
            "-o" | "--output" => out = Some(value(a)?),
            "-X" | "--request" => method = Some(value(a)?),
            "-H" | "--header" => {
                let h = value(a)?;
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            "-d" | "--data" | "--data-raw" => data = Some(value(a)?),
            "-m" | "--max-time" => timeout = value(a)?.parse().unwrap_or(30),
            "--fail" => fail_http = true,
            "--silent" => silent = true,
            "--show-error" => show_error = true,
            "--include" => include = true,
            "--location" => follow = true,
            s if s.starts_with('-') && !s.starts_with("--") && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'f' => fail_http = true,
                        's' => silent = true,
                        'S' => show_error = true,
                        'i' => include = true,
                        'L' => follow = true,
                        _ => {
                            return fail_code(
                                2,
                                format!("curl: option -{c}: is unknown (stand-in)"),
                            );
                        }
                    }
                }
            }
            s if s.starts_with("--") => {
                return fail_code(2, format!("curl: option {s}: is unknown (stand-in)"));
            }
            s => url = Some(s.to_owned()),
        }
    }
    let _ = silent;
    let Some(mut url) = url else {
        return fail_code(2, "curl: no URL specified");
    };
    if data.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
    }
    let method = method.unwrap_or_else(|| {
        if data.is_some() {
            "POST".into()
        } else {
            "GET".into()
        }
    });
    let body = data.unwrap_or_default();
    let err = |code: i32, msg: String| -> R<i32> {
        fail_code(
            code,
            if show_error || !silent {
                format!("curl: ({code}) {msg}")
            } else {
                String::new()
            },
        )
    };
    let mut hops = 0;
    let answer = loop {
        let a = match net::request(
            &method,
            &url,
            &headers,
            body.as_bytes(),
            Duration::from_secs(timeout),
        ) {
            Ok(a) => a,
            Err(e) if e.starts_with("Protocol") => return err(1, e),
            Err(e) if e.contains("resolve") => return err(6, e),
            Err(e) => return err(7, e),
        };
        if follow
            && (300..400).contains(&a.status)
            && hops < 10
            && let Some(loc) = a.header("location")
        {
            url = if loc.starts_with("http") {
                loc.to_owned()
            } else {
                let (h, p, _) = net::split_url(&url).unwrap_or_default();
                format!("http://{h}:{p}{loc}")
            };
            hops += 1;
            continue;
        }
        break a;
    };
    if fail_http && answer.status >= 400 {
        return err(
            22,
            format!("The requested URL returned error: {}", answer.status),
        );
    }
    let mut bytes = Vec::new();
    if include {
        bytes.extend(format!("HTTP/1.1 {}\r\n", answer.status).bytes());
        for (k, v) in &answer.headers {
            bytes.extend(format!("{k}: {v}\r\n").bytes());
        }
        bytes.extend(b"\r\n");
    }
    bytes.extend(&answer.body);
    match out {
        Some(path) => std::fs::write(&path, &bytes).or_else(|e| {
            err(
                23,
                format!("Failure writing output to destination {path}: {e}"),
            )
            .map(|_| ())
        })?,
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(0)
}
