//! Tells a service manager that the agent is up: systemd's readiness
//! protocol (`sd_notify(3)`), one `READY=1` datagram to `$NOTIFY_SOCKET`
//! once the guards, the TUN device and the workers are in place, so units
//! ordered after `vxsec.service` (Docker's) start only then. It does
//! nothing when no service manager asked (`NOTIFY_SOCKET` unset), and it
//! never fails the agent: a manager that cannot be told is logged.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `READY=1` (with `STATUS=` text) to the manager named by
/// `NOTIFY_SOCKET`, if any. Returns whether a manager was told.
pub fn ready(status: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send(&path, &format!("READY=1\nSTATUS={status}\n"))?;
    Ok(true)
}

/// One datagram to a notify socket: a path, or an abstract name written
/// with a leading `@`.
fn send(path: &OsStr, message: &str) -> io::Result<()> {
    let bytes = path.as_bytes();
    let addr = match bytes.split_first() {
        Some((b'@', name)) => SocketAddr::from_abstract_name(name)?,
        Some(_) => SocketAddr::from_pathname(path)?,
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty NOTIFY_SOCKET",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), "READY=1\n").expect("send to a path");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");

        let name = format!("vxsec-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        send(OsStr::new(&format!("@{name}")), "READY=1\n").expect("send to @name");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn an_empty_socket_name_is_an_error() {
        assert!(send(OsStr::new(""), "READY=1\n").is_err());
    }
}
