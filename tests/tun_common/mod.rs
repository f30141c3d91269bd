//! Shared helpers for H-io's kernel tests (tests/tun_*.rs, tests/udp_*.rs):
//! a uniquely named network namespace deleted on drop (every exit path,
//! panics included), a closure run inside it on a dedicated thread, `ip`
//! invocations, the root check, an independent Internet checksum, and a
//! kernel VXLAN device whose underlay route is a TUN.
#![allow(dead_code)] // each test file uses a different subset

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use vxsec::io::sys;

/// Moves the calling thread (only it) into the network namespace at
/// `path` (e.g. `/run/netns/<name>`); sockets and TUN devices it then
/// creates live there.
pub fn enter_netns(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&file),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    Ok(())
}

/// A network namespace `vxsec-<tag>-<pid>-<n>` with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            name: format!("vxsec-{tag}-{}-{n}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <name> …`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `f` on a dedicated thread moved into the namespace (sockets and
    /// TUN devices it creates live there); re-raises its panic.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = std::path::PathBuf::from(format!("/run/netns/{}", self.name));
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                if let Err(e) = enter_netns(&path) {
                    panic!("enter netns: {e}");
                }
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// A kernel VXLAN device `dev` (VNI `vni`, `local` → `remote`, port
    /// 4789) with address `<subnet>.1/24`, MTU `mtu`, and a static
    /// neighbour `<subnet>.2` so traffic to it is encapsulated without ARP.
    pub fn add_vxlan(
        &self,
        dev: &str,
        vni: &str,
        local: &str,
        remote: &str,
        subnet: &str,
        mtu: &str,
    ) {
        let addr = format!("{subnet}.1/24");
        let peer = format!("{subnet}.2");
        self.ip(&[
            "link", "add", dev, "type", "vxlan", "id", vni, "local", local, "remote", remote,
            "dstport", "4789",
        ]);
        self.ip(&["addr", "add", &addr, "dev", dev]);
        self.ip(&["link", "set", dev, "mtu", mtu, "up"]);
        self.ip(&[
            "neigh",
            "add",
            &peer,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            dev,
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `ip …`, asserting success.
pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status();
    assert!(
        matches!(st, Ok(s) if s.success()),
        "ip {args:?} failed: {st:?}"
    );
}

/// True when root; otherwise prints why `test` is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if !sys::is_root() {
        println!("skipping {test}: needs root (TUN devices and network namespaces)");
        return false;
    }
    true
}

/// Whether an IPv4/UDP packet (20-byte header) has valid IP and UDP checksums.
pub fn ipv4_udp_checksums_ok(p: &[u8]) -> bool {
    let len = ((p.len() - 20) as u16).to_be_bytes();
    let pseudo = [&p[12..20], &[0, 17], &len[..], &p[20..]];
    reference_sum(&[&p[..20]]) == 0xffff && reference_sum(&pseudo) == 0xffff
}

/// The independent RFC 1071 reference sum (one copy, shared with the unit
/// tests): tests hold the kernel's and vxsec's checksums against it.
#[path = "../../fuzz/oracles/reference_sum.rs"]
mod reference;
pub use reference::reference_sum;
