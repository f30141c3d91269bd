//! The one container image the Swarm tests use, built locally because no
//! registry is reachable: Debian's static busybox (`busybox-static`) as
//! `/bin/busybox` plus the applet links the tests call, packed into a tar
//! for `docker import`. It does not talk to any daemon.

use std::path::{Path, PathBuf};

use vxsec_lab::Cmd;

/// The tag every node imports the image under.
pub const IMAGE: &str = "vxsec-busybox:test";

/// Applets the tests run inside containers.
const APPLETS: &[&str] = &[
    "sh",
    "ping",
    "nc",
    "wget",
    "nslookup",
    "sha256sum",
    "httpd",
    "sleep",
    "cat",
    "dd",
    "wc",
    "head",
    "mkdir",
    "ls",
    "ip",
    "hostname",
    "grep",
    "true",
];

/// Debian's static busybox, or `None` when `busybox-static` is missing.
pub fn static_busybox() -> Option<PathBuf> {
    let p = PathBuf::from("/bin/busybox");
    let bytes = std::fs::read(&p).ok()?;
    // A dynamically linked ELF names its loader; the image has no libc.
    let dynamic = bytes.windows(14).any(|w| w == b"/lib64/ld-linu")
        || bytes.windows(12).any(|w| w == b"/lib/ld-linu");
    (!dynamic).then_some(p)
}

/// Builds the rootfs under `dir` and returns the path of its tarball.
pub fn build_tarball(dir: &Path, busybox: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    for d in ["tmp", "srv", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("rootfs dir");
    }
    std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let tar = dir.join("busybox-rootfs.tar");
    Cmd::new("tar")
        .args(["-C".to_owned(), root.to_string_lossy().into_owned()])
        .args([
            "-cf".to_owned(),
            tar.to_string_lossy().into_owned(),
            ".".to_owned(),
        ])
        .run()
        .expect("tar the rootfs");
    tar
}
