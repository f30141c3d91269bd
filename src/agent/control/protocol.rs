//! The control socket's protocol: one JSON [`Request`] per line in, one
//! JSON [`Response`] per line out, and the [`PeerSpec`] that `peer_add`
//! and the fleet registry push.
//!
//! Types only: no socket (`agent::control`) and no request handling
//! (`agent::control::handler`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::agent::status::{PeerView, Status};

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
    PeerAdd {
        peer: PeerSpec,
    },
    PeerRemove {
        public_key: String,
    },
    Rekey {
        public_key: Option<String>,
    },
    /// The peer with `old_public_key` rolled its static key: it becomes
    /// `peer` (same tunnel address) and keeps its SAs.
    PeerKeyChange {
        old_public_key: String,
        peer: PeerSpec,
    },
    /// Rolls this node's static key (fleet mode): the new private key and
    /// its certificate, read by the agent from these files, replace the
    /// configured ones once checked; the old key is answered until the
    /// grace period (`fleet.rotation_grace_seconds`) ends.
    RotateIdentity {
        private_key_file: PathBuf,
        certificate_file: PathBuf,
    },
    /// Ends a rotation's grace period now: the previous key is refused.
    RetirePreviousIdentity,
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
        let r: Request = serde_json::from_str(
            r#"{"cmd":"rotate_identity","private_key_file":"/n.key","certificate_file":"/n.crt"}"#,
        )
        .expect("parse");
        assert!(matches!(r, Request::RotateIdentity { .. }));
        let r: Request =
            serde_json::from_str(r#"{"cmd":"retire_previous_identity"}"#).expect("parse");
        assert_eq!(r, Request::RetirePreviousIdentity);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"format_disk"}"#).is_err());
    }
}
