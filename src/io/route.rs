//! Routes and links over rtnetlink (the `rtnetlink` crate): blackhole routes
//! in the main table (replace, list, delete, selected by route protocol) and
//! links by name (exists, delete). Every function blocks: it runs rtnetlink
//! on a private current-thread tokio runtime, so it must not be called from
//! inside a tokio runtime. It decides nothing: which routes to install is
//! `agent::guard`'s business.

use std::future::Future;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use super::IoError;

/// A `blackhole` route in the main table: `dst/len`, with a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlackholeRoute {
    /// Network address of the prefix (host bits clear).
    pub dst: IpAddr,
    /// Prefix length.
    pub len: u8,
    /// Route metric (`priority` in netlink).
    pub metric: u32,
}

impl std::fmt::Display for BlackholeRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blackhole {}/{} metric {}",
            self.dst, self.len, self.metric
        )
    }
}

pub(super) fn kernel(op: &'static str, e: &rtnetlink::Error) -> IoError {
    IoError::Netlink {
        op,
        message: e.to_string(),
    }
}

/// Runs `f` with a fresh rtnetlink connection on a private runtime; the
/// outer error is setting that up, the inner one the kernel's answer. The
/// socket checks requests strictly (`NETLINK_GET_STRICT_CHK`), so dumps are
/// filtered in the kernel rather than copied whole.
pub(super) fn with_handle_raw<T, F, Fut>(
    op: &'static str,
    f: F,
) -> Result<Result<T, rtnetlink::Error>, IoError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, rtnetlink::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(IoError::os(op))?;
    rt.block_on(async {
        let (conn, handle, _) =
            rtnetlink::new_connection_with_strict_check().map_err(IoError::os(op))?;
        let task = tokio::spawn(conn);
        let r = f(handle).await;
        task.abort();
        Ok(r)
    })
}

pub(super) fn with_handle<T, F, Fut>(op: &'static str, f: F) -> Result<T, IoError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, rtnetlink::Error>>,
{
    with_handle_raw(op, f)?.map_err(|e| kernel(op, &e))
}

fn message(r: &BlackholeRoute, protocol: u8) -> Result<RouteMessage, IoError> {
    let m = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst, r.len)
        .map_err(|e| IoError::Netlink {
            op: "blackhole route",
            message: e.to_string(),
        })?
        .kind(RouteType::BlackHole)
        .protocol(RouteProtocol::from(protocol))
        .priority(r.metric)
        .build();
    Ok(m)
}

/// Adds `r`, or replaces the route with the same prefix and metric: never
/// a duplicate, however often it is called.
pub fn replace_blackhole(r: &BlackholeRoute, protocol: u8) -> Result<(), IoError> {
    let msg = message(r, protocol)?;
    with_handle("add blackhole route", |h| async move {
        h.route().add(msg).replace().execute().await
    })
}

/// Deletes `r` (added with `protocol`); Ok(false) when it was not there.
pub fn delete_blackhole(r: &BlackholeRoute, protocol: u8) -> Result<bool, IoError> {
    let msg = message(r, protocol)?;
    let op = "delete blackhole route";
    match with_handle_raw(op, |h| async move { h.route().del(msg).execute().await })? {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ESRCH => Ok(false),
        Err(e) => Err(kernel(op, &e)),
    }
}

fn as_blackhole(m: &RouteMessage, protocol: u8) -> Option<BlackholeRoute> {
    let h = &m.header;
    if h.kind != RouteType::BlackHole
        || h.protocol != RouteProtocol::from(protocol)
        || h.table != RouteHeader::RT_TABLE_MAIN
    {
        return None;
    }
    let mut dst = None;
    let mut metric = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(v4)) => dst = Some(IpAddr::V4(*v4)),
            RouteAttribute::Destination(RouteAddress::Inet6(v6)) => dst = Some(IpAddr::V6(*v6)),
            RouteAttribute::Priority(p) => metric = *p,
            _ => {}
        }
    }
    Some(BlackholeRoute {
        dst: dst?,
        len: h.destination_prefix_length,
        metric,
    })
}

/// Every blackhole route of the main table (IPv4 and IPv6) whose route
/// protocol is `protocol`.
pub fn blackholes(protocol: u8) -> Result<Vec<BlackholeRoute>, IoError> {
    with_handle("list routes", |h| async move {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            // Filters the kernel applies under strict checking.
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            req.header.table = RouteHeader::RT_TABLE_MAIN;
            req.header.protocol = RouteProtocol::from(protocol);
            req.header.kind = RouteType::BlackHole;
            let mut dump = h.route().get(req).execute();
            while let Some(m) = dump.try_next().await? {
                out.extend(as_blackhole(&m, protocol));
            }
        }
        Ok(out)
    })
}

pub(super) fn link_index(
    h: &Handle,
    name: &str,
) -> impl Future<Output = Result<Option<u32>, rtnetlink::Error>> {
    let mut dump = h.link().get().execute();
    let name = name.to_owned();
    async move {
        while let Some(m) = dump.try_next().await? {
            if link_name(&m) == Some(name.as_str()) {
                return Ok(Some(m.header.index));
            }
        }
        Ok(None)
    }
}

fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Does a link named `name` exist?
pub fn link_exists(name: &str) -> Result<bool, IoError> {
    with_handle("list links", |h| async move {
        Ok(link_index(&h, name).await?.is_some())
    })
}

/// Deletes the link named `name`; Ok(false) when there is none.
pub fn delete_link(name: &str) -> Result<bool, IoError> {
    with_handle("delete link", |h| async move {
        match link_index(&h, name).await? {
            Some(index) => {
                h.link().del(index).execute().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    })
}
