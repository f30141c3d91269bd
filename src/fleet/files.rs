//! Fleet files: the authority key (base64 PKCS#8, mode 0600, never in a
//! node's config), node certificate files (armoured base64), and the
//! agent's cache of verified records (0600, written atomically). Nothing
//! read here is trusted: certificates are verified by the caller.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::authority::Authority;
use crate::agent::keys::{read_secret, KeyFileError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const BEGIN: &str = "-----BEGIN VXSEC NODE CERTIFICATE-----";
const END: &str = "-----END VXSEC NODE CERTIFICATE-----";

/// A fleet file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FleetFileError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("{path}: not an authority key (`vxsec fleet init --out FILE`)")]
    NotAuthorityKey { path: PathBuf },
    #[error("{path}: not a vxsec node certificate (`vxsec fleet sign`)")]
    NotCertificate { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FleetFileError + '_ {
    move |source| FleetFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a new 0600 file (never overwriting) holding `text`.
fn write_new_secret(path: &Path, text: &[u8]) -> Result<(), FleetFileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

/// `vxsec fleet init`: a new authority key written to `path`.
pub fn write_new_authority(path: &Path) -> Result<Authority, FleetFileError> {
    let a = Authority::generate().map_err(|_| FleetFileError::NotAuthorityKey {
        path: path.to_path_buf(),
    })?;
    let mut line = Zeroizing::new(B64.encode(a.dangerous_pkcs8()));
    line.push('\n');
    write_new_secret(path, line.as_bytes())?;
    Ok(a)
}

/// Loads the authority key (refused unless 0600).
pub fn load_authority(path: &Path) -> Result<Authority, FleetFileError> {
    let text = read_secret(path)?;
    let bad = || FleetFileError::NotAuthorityKey {
        path: path.to_path_buf(),
    };
    let der = Zeroizing::new(B64.decode(text.trim()).map_err(|_| bad())?);
    Authority::from_pkcs8(der).map_err(|_| bad())
}

/// The armoured text of a certificate.
pub fn armor(cert: &[u8]) -> String {
    format!("{BEGIN}\n{}\n{END}\n", B64.encode(cert))
}

/// The bytes inside an armoured certificate.
pub fn dearmor(text: &str) -> Option<Vec<u8>> {
    let inner = text.trim().strip_prefix(BEGIN)?.strip_suffix(END)?;
    let b64: String = inner.split_whitespace().collect();
    B64.decode(b64).ok()
}

/// Reads a certificate file (not verified).
pub fn load_certificate(path: &Path) -> Result<Vec<u8>, FleetFileError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    dearmor(&text).ok_or_else(|| FleetFileError::NotCertificate {
        path: path.to_path_buf(),
    })
}

/// Writes a certificate file (public: mode 0644), never overwriting.
pub fn write_certificate(path: &Path, cert: &[u8]) -> Result<(), FleetFileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io(path))?;
    f.write_all(armor(cert).as_bytes()).map_err(io(path))
}

/// Writes the cache of verified records: one base64 certificate per line,
/// 0600, replaced atomically (write a temporary file, then rename).
pub fn save_cache(path: &Path, certs: &[&[u8]]) -> Result<(), FleetFileError> {
    let mut text = String::new();
    for c in certs {
        text.push_str(&B64.encode(c));
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_new_secret(&tmp, text.as_bytes())?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// A file written next to its destination, not yet in place: `commit`
/// renames it over the destination (atomic on one file system); dropped
/// uncommitted, it is removed. So a caller can write every file of a change
/// first and put them in place only once nothing else can fail.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    dst: PathBuf,
    committed: bool,
}

impl Staged {
    /// Writes `bytes` to a temporary file beside `dst`, created with `mode`
    /// (before any byte is written) and synced.
    pub fn write(dst: &Path, bytes: &[u8], mode: u32) -> Result<Self, FleetFileError> {
        let mut name = dst.file_name().unwrap_or_default().to_os_string();
        name.push(".rotate-tmp");
        let tmp = dst.with_file_name(name);
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let staged = Staged {
            tmp,
            dst: dst.to_path_buf(),
            committed: false,
        };
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(io(&staged.tmp))?;
        Ok(staged)
    }

    /// Renames the file over its destination.
    pub fn commit(mut self) -> Result<(), FleetFileError> {
        fs::rename(&self.tmp, &self.dst).map_err(io(&self.dst))?;
        self.committed = true;
        if let Some(dir) = self.dst.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Reads the cache (refused unless 0600); lines that are not base64 are
/// skipped; the caller verifies every certificate again.
pub fn load_cache(path: &Path) -> Result<Vec<Vec<u8>>, FleetFileError> {
    let text = read_secret(path)?;
    Ok(text
        .lines()
        .filter_map(|l| B64.decode(l.trim()).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn authority_file_is_0600_and_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("authority.key");
        let a = write_new_authority(&p).expect("write");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_authority(&p).expect("load").public_key(),
            a.public_key()
        );
        assert!(write_new_authority(&p).is_err(), "overwrote");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(load_authority(&p), Err(FleetFileError::Key(_))));
    }

    #[test]
    fn certificate_armor_and_cache_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("n.crt");
        write_certificate(&p, b"\x01\x02abc").expect("write");
        assert_eq!(load_certificate(&p).expect("load"), b"\x01\x02abc");
        assert!(dearmor("junk").is_none());
        let c = dir.path().join("cache");
        save_cache(&c, &[b"one", b"two"]).expect("save");
        save_cache(&c, &[b"three"]).expect("replace");
        let mode = fs::metadata(&c).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_cache(&c).expect("load"), vec![b"three".to_vec()]);
    }

    #[test]
    fn staged_files_replace_atomically_or_vanish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("node.key");
        fs::write(&p, "old\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        let dropped = Staged::write(&p, b"never\n", 0o600).expect("stage");
        drop(dropped);
        assert_eq!(fs::read_to_string(&p).expect("read"), "old\n");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "temp removed"
        );
        let s = Staged::write(&p, b"new\n", 0o600).expect("stage");
        assert_eq!(
            fs::read_to_string(&p).expect("read"),
            "old\n",
            "not before commit"
        );
        s.commit().expect("commit");
        assert_eq!(fs::read_to_string(&p).expect("read"), "new\n");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
