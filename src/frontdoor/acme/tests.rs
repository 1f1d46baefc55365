use super::*;

const DIR: &str = "https://acme.example.net/directory";
const T0: i64 = 1_800_000_000;

fn hosts() -> Vec<String> {
    ["box", "cloud", "office", "forum"]
        .iter()
        .map(|h| format!("{h}.quimper.example.org"))
        .collect()
}

fn wanted(hosts: &[String]) -> Wanted<'_> {
    Wanted {
        directory: DIR,
        hosts,
        renew_before_days: 30,
    }
}

fn issued(not_after_days: i64) -> Issued {
    Issued {
        directory: DIR.into(),
        hosts: sorted(&hosts()),
        not_before: T0,
        not_after: T0 + not_after_days * DAY,
        issued_at: T0,
    }
}

#[test]
fn no_certificate_means_order() {
    let h = hosts();
    assert_eq!(
        decide(&Record::default(), wanted(&h), T0),
        Decision::Order(Reason::NoCertificate)
    );
}

#[test]
fn a_good_certificate_is_kept_until_its_renewal_window() {
    let h = hosts();
    let r = Record::succeeded(issued(90));
    let renew_at = T0 + 60 * DAY;
    assert_eq!(decide(&r, wanted(&h), T0), Decision::Keep { renew_at });
    // Order of the hostnames does not matter.
    let mut shuffled = h.clone();
    shuffled.reverse();
    assert_eq!(
        decide(&r, wanted(&shuffled), renew_at - 1),
        Decision::Keep { renew_at }
    );
    assert_eq!(
        decide(&r, wanted(&h), renew_at),
        Decision::Order(Reason::Renewal { days_left: 30 })
    );
    assert_eq!(
        decide(&r, wanted(&h), T0 + 91 * DAY),
        Decision::Order(Reason::Renewal { days_left: -1 })
    );
    // A longer window renews sooner.
    let w = Wanted {
        renew_before_days: 3650,
        ..wanted(&h)
    };
    assert_eq!(
        decide(&r, w, T0),
        Decision::Order(Reason::Renewal { days_left: 90 })
    );
}

#[test]
fn new_hostnames_or_directory_mean_order() {
    let mut more = hosts();
    more.push("wiki.quimper.example.org".into());
    let r = Record::succeeded(issued(90));
    assert_eq!(
        decide(&r, wanted(&more), T0),
        Decision::Order(Reason::HostnamesChanged)
    );
    let fewer = &hosts()[..3];
    assert_eq!(
        decide(&r, wanted(fewer), T0),
        Decision::Order(Reason::HostnamesChanged)
    );
    let h = hosts();
    let staging = Wanted {
        directory: "https://acme-staging.example.net/directory",
        ..wanted(&h)
    };
    assert_eq!(
        decide(&r, staging, T0),
        Decision::Order(Reason::NewDirectory)
    );
}

#[test]
fn failures_back_off_doubling_to_six_hours_and_keep_the_certificate() {
    assert_eq!(retry_delay(1), 60);
    assert_eq!(retry_delay(2), 120);
    assert_eq!(retry_delay(3), 240);
    assert_eq!(retry_delay(9), 15_360);
    assert_eq!(retry_delay(10), 6 * 3600, "30720 s, capped");
    assert_eq!(retry_delay(u32::MAX), 6 * 3600);

    let h = hosts();
    let before = Record::succeeded(issued(20));
    let r = before.failed(T0, "port 80 unreachable".into());
    assert_eq!(r.issued, before.issued, "the current certificate stays");
    assert_eq!((r.failures, r.retry_at), (1, T0 + 60));
    assert_eq!(r.last_error.as_deref(), Some("port 80 unreachable"));
    let reason = Reason::Renewal { days_left: 19 };
    assert_eq!(
        decide(&r, wanted(&h), T0 + 59),
        Decision::Backoff {
            reason: reason.clone(),
            until: T0 + 60
        }
    );
    assert_eq!(decide(&r, wanted(&h), T0 + 60), Decision::Order(reason));
    let r = r.failed(T0 + 60, "again".into());
    assert_eq!((r.failures, r.retry_at), (2, T0 + 60 + 120));

    // A reload retries at once, and the next failure waits longer still.
    let mut reloaded = r.clone();
    reloaded.retry_now();
    assert!(matches!(
        decide(&reloaded, wanted(&h), T0 + 61),
        Decision::Order(_)
    ));
    assert_eq!(reloaded.failed(T0 + 61, "x".into()).retry_at, T0 + 61 + 240);

    // Success forgets the failures.
    let ok = Record::succeeded(issued(90));
    assert_eq!((ok.failures, ok.retry_at, ok.last_error), (0, 0, None));
}

#[test]
fn the_next_look_is_within_the_hour_and_never_a_busy_loop() {
    let now = T0;
    assert_eq!(
        next_look(
            &Decision::Keep {
                renew_at: now + 30 * DAY
            },
            now
        ),
        3600
    );
    assert_eq!(next_look(&Decision::Keep { renew_at: now + 90 }, now), 90);
    assert_eq!(
        next_look(
            &Decision::Backoff {
                reason: Reason::NoCertificate,
                until: now + 60
            },
            now
        ),
        60
    );
    assert_eq!(
        next_look(&Decision::Order(Reason::NoCertificate), now),
        3600,
        "still due right after an order: wait for the hourly check"
    );
    assert_eq!(next_look(&Decision::Keep { renew_at: now - 5 }, now), 1);
}

#[test]
fn tokens_are_base64url_only() {
    assert!(is_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
    assert!(is_token("a-b_C9"));
    for bad in [
        "",
        "..",
        "../secrets",
        "a/b",
        "a.b",
        "%2e%2e",
        "a b",
        "a\0b",
        "é",
        "a?b",
        &"a".repeat(257),
    ] {
        assert!(!is_token(bad), "{bad:?}");
    }
}

#[test]
fn challenge_paths_refuse_traversal() {
    assert_eq!(
        challenge_token("/.well-known/acme-challenge/abc_DEF-123"),
        Some("abc_DEF-123")
    );
    for bad in [
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/../../tls/acme.json",
        "/.well-known/acme-challenge/..%2f..%2fsecrets",
        "/.well-known/acme-challenge/%2e%2e",
        "/.well-known/acme-challenge/a/b",
        "/.well-known/acme-challenge/.hidden",
        "/.well-known/acme-challenge//etc/passwd",
        "/.well-known/acme-challengeabc",
        "/.WELL-KNOWN/acme-challenge/abc",
        "/x/.well-known/acme-challenge/abc",
        "/",
    ] {
        assert_eq!(challenge_token(bad), None, "{bad}");
    }
}

fn cert_with_dates(not_before: time::OffsetDateTime, not_after: time::OffsetDateTime) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(vec!["box.quimper.example.org".into()]).unwrap();
    p.not_before = not_before;
    p.not_after = not_after;
    let key = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn validity_reads_both_date_forms() {
    let at = |y, m, d, h, mi, s| {
        time::PrimitiveDateTime::new(
            time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap(),
            time::Time::from_hms(h, mi, s).unwrap(),
        )
        .assume_utc()
    };
    // UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
    let (nb, na) = (at(2026, 3, 1, 12, 30, 5), at(2049, 12, 31, 23, 59, 59));
    assert_eq!(
        validity(&cert_with_dates(nb, na)).unwrap(),
        (nb.unix_timestamp(), na.unix_timestamp())
    );
    let (nb, na) = (at(1999, 1, 2, 3, 4, 5), at(2051, 6, 30, 0, 0, 0));
    assert_eq!(
        validity(&cert_with_dates(nb, na)).unwrap(),
        (nb.unix_timestamp(), na.unix_timestamp())
    );
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            cert_with_dates(nb, na)
        )
    );
    assert_eq!(
        leaf_validity(pem.as_bytes()).unwrap().1,
        na.unix_timestamp()
    );
    assert!(leaf_validity(b"no certificate here").is_err());
}

#[test]
fn validity_refuses_what_is_not_a_certificate() {
    let der = cert_with_dates(
        time::OffsetDateTime::from_unix_timestamp(T0).unwrap(),
        time::OffsetDateTime::from_unix_timestamp(T0 + 90 * DAY).unwrap(),
    );
    assert!(validity(&[]).is_err());
    assert!(validity(&[0x30]).is_err());
    assert!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(validity(&[0x04, 0x00]).is_err(), "an octet string");
    for cut in [1, 10, 100, der.len() / 2, der.len() - 1] {
        assert!(validity(&der[..cut]).is_err(), "cut at {cut}");
    }
}

proptest::proptest! {
    #[test]
    fn validity_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = validity(&bytes);
    }

    #[test]
    fn a_token_is_a_single_safe_path_segment(s in "\\PC{0,40}") {
        if is_token(&s) {
            proptest::prop_assert!(!s.contains('/') && !s.contains('.') && !s.contains('%'));
            let path = format!("{CHALLENGE_PREFIX}{s}");
            proptest::prop_assert_eq!(challenge_token(&path), Some(s.as_str()));
        }
    }
}
