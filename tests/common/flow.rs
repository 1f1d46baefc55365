//! The onboarding service on a real slapd, in process: what the onboarding
//! and membership tests share. Mails are read from the outbox, where the
//! service queues them.

use std::sync::{Arc, Mutex};

use commonscloud::onboarding::service::{Onboarding, OnboardingError, Settings, os_random};
use commonscloud::onboarding::validate::Form;
use commonscloud::store::Store;

use super::slapd::Instance;

pub const T0: i64 = 1_800_000_000;

pub struct Fixture {
    pub inst: Instance,
    pub store: Arc<Mutex<Store>>,
    pub svc: Onboarding,
}

pub async fn fixture() -> Fixture {
    let inst = Instance::start().await;
    let store = Arc::new(Mutex::new(
        Store::open(&inst.config.paths.state_dir).unwrap(),
    ));
    let settings = Settings {
        tree: inst.tree.clone(),
        ldap: inst.paths.clone(),
        collective_name: "Les Communs de Quimper".into(),
        console_url: "https://box.quimper.example.org".into(),
        admin_email: "admin@quimper.example.org".into(),
        home_node: "box.quimper.example.org".into(),
    };
    let svc = Onboarding::new(settings, store.clone(), os_random);
    Fixture { inst, store, svc }
}

pub fn form(uid: &str, email: &str) -> Form {
    Form {
        uid: uid.into(),
        display_name: format!("{uid} Person"),
        email: email.into(),
        collective: "quimper".into(),
        message: "I run the repair café.".into(),
        language: "ca".into(),
        ..Form::default()
    }
}

impl Fixture {
    /// The newest queued mail to `to` with `template`, and its link's token.
    pub fn mail(&self, to: &str, template: &str) -> (serde_json::Value, String) {
        let store = self.store.lock().unwrap();
        let mails = store.due_mail(i64::MAX, 1000).unwrap();
        let m = mails
            .iter()
            .rev()
            .find(|m| m.recipient == to && m.template == template)
            .unwrap_or_else(|| panic!("no {template} mail to {to} in {mails:?}"));
        let params: serde_json::Value = serde_json::from_str(&m.params).unwrap();
        let token = params["link"]
            .as_str()
            .and_then(|l| l.split("token=").nth(1))
            .unwrap_or_default()
            .to_owned();
        (params, token)
    }

    pub fn state(&self, id: i64) -> String {
        self.store
            .lock()
            .unwrap()
            .registration(id)
            .unwrap()
            .unwrap()
            .state
    }

    pub async fn active_person(&self, uid: &str, email: &str, password: &str) -> i64 {
        let id = self
            .svc
            .register(&form(uid, email), "192.0.2.1", T0)
            .await
            .unwrap()
            .request()
            .unwrap();
        let (_, t) = self.mail(email, "verify");
        self.svc.verify_email(&t, T0 + 10).await.unwrap();
        self.svc.approve(id, "admin", T0 + 20).await.unwrap();
        let (_, t) = self.mail(email, "set_password");
        self.svc.set_password(&t, password, T0 + 30).await.unwrap();
        id
    }
}

pub fn field_of(e: &OnboardingError) -> Vec<&'static str> {
    match e {
        OnboardingError::Invalid(v) => v.iter().map(|f| f.field).collect(),
        other => panic!("expected a field error, got {other}"),
    }
}
