//! The control socket: a Unix socket (mode 0600) speaking one JSON request
//! and one JSON response per line, so `vxsec status/peer/rekey` and an
//! overlay daemon can talk to a running agent.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"peer_list"}`,
//! `{"cmd":"peer_add","peer":{…}}`, `{"cmd":"peer_remove","public_key":"…"}`,
//! `{"cmd":"rekey","public_key":null}`, `{"cmd":"peer_key_change",…}`,
//! `{"cmd":"rotate_identity","private_key_file":"…","certificate_file":"…"}`,
//! `{"cmd":"retire_previous_identity"}`. Responses: `{"ok":true,…}` or
//! `{"ok":false,"error":"…"}`.
//!
//! This file is the socket (bind, serve, and the client's `request`); the
//! request and response types are `protocol`, and what a request does to
//! the running agent is `handler` (which nothing here imports, so the
//! client side, e.g. `vxsec down`, does not depend on the agent's state).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;

pub(super) mod handler;
pub(super) mod protocol;

pub use protocol::{PeerSpec, Request, Response};

/// Longest request line accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

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
