//! The only code that talks to the Docker Engine (through bollard).
//!
//! Adapter: it reports what Docker says and decides nothing.

use std::time::Duration;

use bollard::Docker;

/// Where to find the engine unless `DOCKER_HOST` names a unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Versions the engine reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineInfo {
    pub socket: String,
    pub engine_version: String,
    /// The API version the engine speaks (its maximum).
    pub api_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "Docker socket {socket} does not exist: install Docker (`apt install docker.io`) and start it (`systemctl enable --now docker`)"
    )]
    NoSocket { socket: String },
    #[error(
        "cannot reach Docker at {socket}: {source}. Check that the docker service runs and that this user is in the `docker` group"
    )]
    Unreachable {
        socket: String,
        source: bollard::errors::Error,
    },
    #[error("Docker at {socket} did not answer within {secs} s")]
    Timeout { socket: String, secs: u64 },
}

/// The unix socket to use: `DOCKER_HOST=unix://…` or the default.
pub fn socket_path() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_SOCKET.to_owned())
}

/// Connects, negotiates the API version and asks the engine for its versions.
pub async fn probe(socket: &str, timeout: Duration) -> Result<EngineInfo, DockerError> {
    if !std::path::Path::new(socket).exists() {
        return Err(DockerError::NoSocket {
            socket: socket.to_owned(),
        });
    }
    let unreachable = |source| DockerError::Unreachable {
        socket: socket.to_owned(),
        source,
    };
    let work = async {
        let docker = Docker::connect_with_unix(
            socket,
            timeout.as_secs().max(1),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(unreachable)?
        .negotiate_version()
        .await
        .map_err(unreachable)?;
        let v = docker.version().await.map_err(unreachable)?;
        Ok(EngineInfo {
            socket: socket.to_owned(),
            engine_version: v.version.unwrap_or_default(),
            api_version: v.api_version.unwrap_or_default(),
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| DockerError::Timeout {
            socket: socket.to_owned(),
            secs: timeout.as_secs(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_says_how_to_fix() {
        let err = probe("/nonexistent/docker.sock", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, DockerError::NoSocket { .. }));
        assert!(err.to_string().contains("apt install docker.io"));
    }

    #[tokio::test]
    async fn real_engine_reports_its_api_version() {
        // The Docker Engine runs on every machine this project tests on.
        let info = probe(&socket_path(), Duration::from_secs(10))
            .await
            .unwrap();
        let (major, minor) = info.api_version.split_once('.').unwrap();
        assert_eq!(major, "1");
        assert!(minor.parse::<u32>().unwrap() >= 41, "{info:?}");
        assert!(!info.engine_version.is_empty());
    }
}
