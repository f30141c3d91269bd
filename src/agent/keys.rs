//! Key files: the private key (base64, mode 0600) and optional PSKs.
//!
//! A key file that group or others can read is refused with a message that
//! says how to fix it. Nothing here logs or prints key material.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vxsec_crypto::key::{PrivateKey, Psk};
use zeroize::Zeroizing;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: mode {mode:04o} lets group or others read a secret key; fix it with `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path}: not a key: expected one line of 44 base64 characters (`vxsec keygen --out FILE`)"
    )]
    Malformed { path: PathBuf },
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a secret file after checking that only its owner can read it.
pub(crate) fn read_secret(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let meta = fs::metadata(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Zeroizing::new(text))
}

/// Loads the node's private key.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let text = read_secret(path)?;
    PrivateKey::from_base64(text.trim()).map_err(|_| KeyFileError::Malformed {
        path: path.to_path_buf(),
    })
}

/// Loads a pre-shared key.
pub fn load_psk(path: &Path) -> Result<Psk, KeyFileError> {
    let text = read_secret(path)?;
    Psk::from_base64(text.trim()).map_err(|_| KeyFileError::Malformed {
        path: path.to_path_buf(),
    })
}

/// Writes a fresh private key to `path`, created with mode 0600 (never
/// overwriting an existing file), and returns it.
pub fn write_new_private_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let key = PrivateKey::generate();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    let mut line = Zeroizing::new(key.to_base64());
    line.push('\n');
    f.write_all(line.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_0600_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("node.key");
        let k = write_new_private_key(&p).expect("write");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = load_private_key(&p).expect("load");
        assert_eq!(back.public_key(), k.public_key());
        assert!(matches!(
            write_new_private_key(&p),
            Err(KeyFileError::Write { .. })
        ));
    }

    #[test]
    fn group_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("node.key");
        write_new_private_key(&p).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = load_private_key(&p).expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("mode 0640") && msg.contains("chmod 600"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_is_not_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("bad.key");
        fs::write(&p, "hello\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            load_private_key(&p),
            Err(KeyFileError::Malformed { .. })
        ));
    }
}
