//! The admins' actions on apps and settings that are not the onboarding
//! service's: shared by the pages (`admin`) and the JSON API (`api`), so
//! both check, do and audit the same way.

use std::time::Duration;

use axum::http::StatusCode;

use super::Web;
use crate::clock::unix_now;
use crate::directory::people::Person;
use crate::events::Event;
use crate::model::AppName;

/// Why an action was not done, with the status to answer.
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

/// One container of the desired state, as observed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AppRow {
    pub app: String,
    pub container: String,
    pub image: String,
    pub memory_mb: u64,
    pub state: String,
}

/// The desired containers with their state and health (from Docker).
pub async fn app_rows(web: &Web) -> Vec<AppRow> {
    let config = web.shared.config();
    let Ok(desired) = crate::apps::desired(&config) else {
        return Vec::new();
    };
    if desired.containers.is_empty() {
        return Vec::new();
    }
    let docker =
        crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(3)).await;
    let mut rows = Vec::new();
    for c in &desired.containers {
        let state = match &docker {
            Ok(d) => match crate::docker::objects::inspect(d, &c.name).await {
                Ok(Some(s)) if s.running => format!("running ({})", s.health),
                Ok(Some(s)) => format!("stopped (exit {})", s.exit_code),
                Ok(None) => "not created".to_owned(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        rows.push(AppRow {
            app: c.app.to_string(),
            container: c.name.clone(),
            image: c.image.clone(),
            memory_mb: c.memory_mb,
            state,
        });
    }
    rows
}

/// Turns an app on or off: the choice is kept in the state dir (see
/// `config::console_apps_path`), checked against the hardware profile
/// first, and applied by a reload, as a config change would be. The apps
/// then enabled.
pub fn set_app(web: &Web, by: &str, app: &str, act: &str) -> Result<Vec<AppName>, Refused> {
    let app: AppName = app
        .parse()
        .map_err(|e: crate::model::Invalid| refused(StatusCode::NOT_FOUND, e.0))?;
    let on = match act {
        "enable" => true,
        "disable" => false,
        _ => return Err(refused(StatusCode::NOT_FOUND, "use enable or disable")),
    };
    let config = web.shared.config();
    let enabled: Vec<AppName> = AppName::ALL
        .iter()
        .copied()
        .filter(|a| {
            if *a == app {
                on
            } else {
                config.apps.enabled.contains(a)
            }
        })
        .collect();
    let mut candidate = (*config).clone();
    candidate.apps.enabled = enabled.clone();
    crate::apps::enabled_apps(&candidate)
        .map_err(|e| refused(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let now = unix_now();
    let choice = crate::config::ConsoleApps {
        enabled: enabled.clone(),
        by: by.to_owned(),
        at: now,
    };
    let path = crate::config::console_apps_path(&config);
    serde_json::to_vec_pretty(&choice)
        .map_err(std::io::Error::other)
        .and_then(|json| crate::sys::write_atomic(&path, &json, 0o640))
        .map_err(|e| {
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    let action = if on { "enable-app" } else { "disable-app" };
    let _ = web
        .shared
        .with_store(|st| st.audit(now, by, action, app.as_str()));
    web.shared.reload();
    Ok(enabled)
}

/// Only containers of this appliance's desired state may be touched here.
fn ours(web: &Web, container: &str) -> Result<(), Refused> {
    let known = crate::apps::desired(&web.shared.config())
        .map(|d| d.containers.iter().any(|c| c.name == container))
        .unwrap_or(false);
    if known {
        Ok(())
    } else {
        Err(refused(
            StatusCode::NOT_FOUND,
            format!("{container} is not a container of this appliance's apps"),
        ))
    }
}

/// The last lines of a container's output.
pub async fn logs(web: &Web, container: &str) -> Result<String, Refused> {
    ours(web, container)?;
    match crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(3)).await {
        Ok(d) => Ok(crate::docker::objects::logs_tail(&d, container, 200).await),
        Err(e) => Err(refused(StatusCode::BAD_GATEWAY, e.to_string())),
    }
}

/// Restarts one of the apps' containers; audited whatever the outcome.
pub async fn restart(web: &Web, by: &str, container: &str) -> Result<(), Refused> {
    ours(web, container)?;
    let r =
        match crate::docker::connect(&crate::docker::socket_path(), Duration::from_secs(3)).await {
            Ok(d) => crate::docker::objects::restart_container(&d, container).await,
            Err(e) => Err(e),
        };
    let _ = web
        .shared
        .with_store(|st| st.audit(unix_now(), by, "restart-app", container));
    r.map_err(|e| refused(StatusCode::BAD_GATEWAY, e.to_string()))
}

/// Asks the reconcile task to run now.
pub fn reconcile(web: &Web, by: &str) {
    web.shared.events.publish(Event::ReconcileAsked);
    let _ = web
        .shared
        .with_store(|st| st.audit(unix_now(), by, "reconcile", "asked from the console"));
}

/// Queues a test mail to the admin.
pub fn test_mail(web: &Web, admin: &Person) -> Result<(), Refused> {
    let config = web.shared.config();
    let params = serde_json::json!({"by": admin.display_name, "collective": config.collective.name.to_string()});
    let now = unix_now();
    let r = web.shared.with_store(|st| {
        st.atomically(|st| {
            st.enqueue_mail(
                &admin.mail,
                "test",
                &admin.language,
                &params.to_string(),
                now,
            )?;
            st.audit(now, &admin.uid, "test-mail", &admin.mail)
        })
    });
    if r.is_ok() {
        web.shared.events.publish(Event::MailQueued);
    }
    r.map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, e))
}
