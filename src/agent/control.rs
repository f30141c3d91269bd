//! The control socket: a Unix socket (mode 0600) speaking one JSON request
//! and one JSON response per line, so `vxsec status/peer/rekey` and an
//! overlay daemon can talk to a running agent.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"peer_list"}`,
//! `{"cmd":"peer_add","peer":{…}}`, `{"cmd":"peer_remove","public_key":"…"}`,
//! `{"cmd":"rekey","public_key":null}`. Responses: `{"ok":true,…}` or
//! `{"ok":false,"error":"…"}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;

use super::status::{PeerView, Status};

/// Longest request line accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A peer as pushed over the socket (the same fields as `[[peer]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub public_key: String,
    #[serde(default)]
    pub endpoint: Option<String>,
    pub tunnel_address: String,
    #[serde(default)]
    pub allowed_vnis: Option<Vec<u32>>,
    #[serde(default)]
    pub psk_file: Option<PathBuf>,
    #[serde(default)]
    pub persistent_keepalive_seconds: Option<u16>,
}

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    PeerList,
    PeerAdd { peer: PeerSpec },
    PeerRemove { public_key: String },
    Rekey { public_key: Option<String> },
}

/// A response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Response {
    pub fn ok_message(msg: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: Some(msg.into()),
            ..Self::default()
        }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            ..Self::default()
        }
    }
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {0}: another agent is already listening there")]
    InUse(PathBuf),
    #[error("control socket {path}: bad response: {msg}")]
    Protocol { path: PathBuf, msg: String },
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the socket with mode 0600, replacing a stale socket file but never
/// a live one.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(path))?;
    }
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    Ok(listener)
}

/// Serves requests until the listener fails; each connection may send
/// several requests. `handle` must not block for long.
pub async fn serve<F>(listener: UnixListener, handle: Arc<F>)
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let handle = Arc::clone(&handle);
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = TokioBufReader::new(rd.take(MAX_REQUEST_BYTES as u64 * 16)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let resp = if line.len() > MAX_REQUEST_BYTES {
                    Response::error("request too long")
                } else {
                    match serde_json::from_str::<Request>(&line) {
                        Ok(req) => handle(req),
                        Err(e) => Response::error(format!("bad request: {e}")),
                    }
                };
                let mut out =
                    serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
                out.push(b'\n');
                if wr.write_all(&out).await.is_err() {
                    break;
                }
            }
        });
    }
}

use tokio::io::AsyncReadExt as _;

/// Sends one request to the agent at `path` and waits for its response.
pub fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let mut stream = StdUnixStream::connect(path).map_err(io_err(path))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err(path))?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err(path))?;
    let mut reader = BufReader::new(stream);
    let mut resp = String::new();
    reader.read_line(&mut resp).map_err(io_err(path))?;
    let resp: Response = serde_json::from_str(&resp).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    if !resp.ok {
        return Err(ControlError::Refused(
            resp.error.unwrap_or_else(|| "refused".to_string()),
        ));
    }
    Ok(resp)
}

/// Serves one request against the running agent: status, the peer list,
/// peer add / remove (through `agent::peers`) and rekeys. What a request
/// makes the core send (initiations) goes out from the control thread,
/// woken here.
pub(super) fn handle_request(s: &super::run::Shared, req: Request) -> Response {
    use super::{clock, peers, snapshot::snapshot};
    use vxsec_crypto::key::PublicKey;
    let resp = match req {
        Request::Status => Response {
            ok: true,
            status: Some(snapshot(s)),
            ..Response::default()
        },
        Request::PeerList => Response {
            ok: true,
            peers: Some(snapshot(s).peers),
            ..Response::default()
        },
        Request::PeerAdd { peer } => peers::add_from_spec(s, &peer, clock::now()),
        Request::PeerRemove { public_key } => match public_key.parse::<PublicKey>() {
            Err(_) => Response::error("public_key: not a base64 X25519 public key"),
            Ok(key) => peers::remove(s, &key),
        },
        Request::Rekey { public_key } => {
            let key = match public_key.as_deref().map(str::parse::<PublicKey>) {
                None => None,
                Some(Ok(k)) => Some(k),
                Some(Err(_)) => return Response::error("not a base64 X25519 public key"),
            };
            if !s.node.rekey(clock::now(), key.as_ref()) {
                let k = key.map(|k| k.to_string()).unwrap_or_default();
                return Response::error(format!("no peer {k}"));
            }
            Response::ok_message(match public_key {
                Some(k) => format!("rekey started for {k}"),
                None => "rekey started for all peers".to_string(),
            })
        }
    };
    s.hs.wake();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_json_form() {
        let r: Request = serde_json::from_str(r#"{"cmd":"status"}"#).expect("parse");
        assert_eq!(r, Request::Status);
        let r: Request =
            serde_json::from_str(r#"{"cmd":"rekey","public_key":null}"#).expect("parse");
        assert_eq!(r, Request::Rekey { public_key: None });
        let r: Request = serde_json::from_str(
            r#"{"cmd":"peer_add","peer":{"public_key":"k","tunnel_address":"10.200.0.9","allowed_vnis":[42]}}"#,
        )
        .expect("parse");
        assert!(matches!(r, Request::PeerAdd { ref peer } if peer.allowed_vnis == Some(vec![42])));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
    }

    #[tokio::test]
    async fn socket_is_0600_and_answers_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/agent.sock");
        let listener = bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind(&path), Err(ControlError::InUse(_))));
        let handler = Arc::new(|req: Request| match req {
            Request::Rekey { public_key } => Response::ok_message(format!("rekey {public_key:?}")),
            _ => Response::error("no"),
        });
        tokio::spawn(serve(listener, handler));
        let p = path.clone();
        let resp = tokio::task::spawn_blocking(move || {
            request(
                &p,
                &Request::Rekey {
                    public_key: Some("x".into()),
                },
            )
        })
        .await
        .expect("join")
        .expect("ok");
        assert_eq!(resp.message.as_deref(), Some("rekey Some(\"x\")"));
        let p = path.clone();
        let err = tokio::task::spawn_blocking(move || request(&p, &Request::Status))
            .await
            .expect("join")
            .expect_err("refused");
        assert_eq!(err.to_string(), "no");
    }
}
