//! Generated secrets on disk: random, 0600, created once.

use std::path::Path;

use super::DirectoryError;

/// Reads the secret at `path`, creating it (32 random bytes, hex, mode 0600)
/// if it does not exist. An empty file is an error, never silently replaced.
pub fn load_or_create(path: &Path) -> Result<String, DirectoryError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| DirectoryError::Io { what, source }
    };
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {
            return Err(DirectoryError::Io {
                what: format!("reading {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the secret file is empty: delete it to have a new one generated",
                ),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("reading")(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| DirectoryError::Io {
        what: "drawing random bytes".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // A command run before the daemon ever started (`commonscloud
    // reconcile`) may be the first to need the directory: it is made 0700.
    crate::sys::write_atomic(path, secret.as_bytes(), 0o600).map_err(io("writing"))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ldap-nextcloud");
        let a = load_or_create(&p).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(&p).unwrap(), a);
        std::fs::write(&p, "").unwrap();
        assert!(
            load_or_create(&p)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn a_missing_directory_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets/nested/api-key");
        load_or_create(&p).unwrap();
        for d in ["secrets", "secrets/nested"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
    }
}
