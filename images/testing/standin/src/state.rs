//! JSON state files on the images' volumes, read and written under an
//! exclusive lock (occ, the entrypoint, cron and the web server may touch
//! them at once).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Ctx, R};

pub struct StateFile {
    pub path: PathBuf,
    /// Owner for files this process creates while running as root.
    pub owner: Option<(u32, u32)>,
    /// Runs after each write, under the lock (Nextcloud's config.php
    /// mirrors its state).
    pub after_write: Option<fn(&Path, &Value) -> R<()>>,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>, owner: Option<(u32, u32)>) -> Self {
        StateFile {
            path: path.into(),
            owner,
            after_write: None,
        }
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.path.with_file_name(name)
    }

    fn lock(&self) -> R<File> {
        let lp = self.lock_path();
        let f = match File::open(&lp) {
            Ok(f) => f,
            Err(_) => {
                let f = File::options()
                    .create(true)
                    .append(true)
                    .open(&lp)
                    .ctx(format!("creating {}", lp.display()))?;
                self.give(&lp);
                f
            }
        };
        f.lock().ctx(format!("locking {}", lp.display()))?;
        Ok(f)
    }

    fn give(&self, p: &Path) {
        if let Some((u, g)) = self.owner
            && crate::euid() == 0
        {
            let _ = std::os::unix::fs::chown(p, Some(u), Some(g));
        }
    }

    /// The current contents (`{}` when the file does not exist yet).
    pub fn read(&self) -> R<Value> {
        let _l = self.lock()?;
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> R<Value> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).ctx(format!("parsing {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Value::Object(Default::default()))
            }
            Err(e) => Err(e).ctx(format!("reading {}", self.path.display())),
        }
    }

    /// Reads, lets `f` change the value, and writes it back atomically
    /// (unless `f` fails).
    pub fn update<T>(&self, f: impl FnOnce(&mut Value) -> R<T>) -> R<T> {
        let _l = self.lock()?;
        let mut v = self.read_unlocked()?;
        let out = f(&mut v)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&v).expect("json"))
            .ctx(format!("writing {}", tmp.display()))?;
        self.give(&tmp);
        std::fs::rename(&tmp, &self.path).ctx(format!("renaming to {}", self.path.display()))?;
        if let Some(hook) = self.after_write {
            hook(&self.path, &v)?;
        }
        Ok(out)
    }
}

/// `v[key]` as an object, created when missing.
pub fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Default::default());
    }
    let m = v.as_object_mut().expect("object");
    let e = m
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Default::default()));
    if !e.is_object() {
        *e = Value::Object(Default::default());
    }
    e.as_object_mut().expect("object")
}

/// `v[key]` as an array, created when missing.
pub fn arr<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.is_object() {
        *v = Value::Object(Default::default());
    }
    let m = v.as_object_mut().expect("object");
    let e = m
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !e.is_array() {
        *e = Value::Array(Vec::new());
    }
    e.as_array_mut().expect("array")
}

/// `v[key]` as a string, `""` when missing.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
