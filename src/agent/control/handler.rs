//! What a control request does to the running agent: status and the peer
//! list from the snapshot, peer add / remove / key change through
//! `agent::peers`, rekeys through the node, this node's static key
//! rotation through `agent::fleet::rotate`. Used by the control socket and the fleet task
//! alike, so there is one way to change peers at run time.
//!
//! It neither reads nor writes the socket (`agent::control` does).

use vxsec_crypto::key::PublicKey;

use super::protocol::{Request, Response};
use crate::agent::shared::Shared;
use crate::agent::snapshot::snapshot;
use crate::agent::{clock, fleet, peers};

/// Serves one request against the running agent: status, the peer list,
/// peer add / remove (through `agent::peers`) and rekeys. What a request
/// makes the core send (initiations) goes out from the control thread,
/// woken here.
pub(in crate::agent) fn handle_request(s: &Shared, req: Request) -> Response {
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
        Request::PeerKeyChange {
            old_public_key,
            peer,
        } => match old_public_key.parse::<PublicKey>() {
            Err(_) => Response::error("old_public_key: not a base64 X25519 public key"),
            Ok(old) => peers::change_key(s, &old, &peer, clock::now()),
        },
        Request::RotateIdentity {
            private_key_file,
            certificate_file,
        } => fleet::rotate::rotate_identity(s, &private_key_file, &certificate_file, clock::now()),
        Request::RetirePreviousIdentity => fleet::rotate::retire_previous(s),
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
