//! `vxsec fleet init | sign | show | rotate`: thin wrappers over
//! `vxsec::fleet` and, for `rotate`, the running agent's control socket.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vxsec::agent::config::resolve_endpoint;
use vxsec::agent::control;
use vxsec::fleet::authority::AuthorityKey;
use vxsec::fleet::cert::{CertBody, SignedCert};
use vxsec::fleet::files;

#[derive(clap::Args)]
pub struct SignArgs {
    /// The authority key file (`vxsec fleet init`).
    #[arg(long)]
    authority: PathBuf,
    /// The node's X25519 public key (`vxsec pubkey`).
    #[arg(long)]
    public_key: String,
    /// The node's tunnel address (no prefix).
    #[arg(long)]
    tunnel_address: IpAddr,
    /// The `network_id` of the nodes' `[interface]`.
    #[arg(long, default_value = "default")]
    network_id: String,
    /// A name for logs and status ([A-Za-z0-9._-], at most 64).
    #[arg(long, default_value = "")]
    name: String,
    /// A VNI the node may use; repeat for more; none = any.
    #[arg(long = "allowed-vni")]
    allowed_vnis: Vec<u32>,
    /// host:port of the node's vxsec socket; repeat for more (at most 4).
    #[arg(long = "endpoint")]
    endpoints: Vec<String>,
    /// Validity from now, in days.
    #[arg(long, default_value_t = 365)]
    valid_days: u64,
    /// Validity in seconds (overrides --valid-days; for tests and short-lived nodes).
    #[arg(long)]
    valid_seconds: Option<u64>,
    /// Where to write the certificate; refuses to overwrite.
    #[arg(long, short)]
    out: PathBuf,
}

fn now_unix() -> u64 {
    vxsec::agent::clock::unix_time().as_secs()
}

pub fn init(out: &Path) -> anyhow::Result<()> {
    let a = files::write_new_authority(out)?;
    println!("{}", a.public_key());
    Ok(())
}

pub fn sign(a: &SignArgs) -> anyhow::Result<()> {
    let authority = files::load_authority(&a.authority)?;
    let public_key = a
        .public_key
        .parse()
        .ok()
        .context("--public-key: not a base64 X25519 public key (`vxsec pubkey`)")?;
    let mut vnis = a.allowed_vnis.clone();
    vnis.sort_unstable();
    vnis.dedup();
    let endpoints = a
        .endpoints
        .iter()
        .map(|e| resolve_endpoint(e).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("--endpoint")?;
    let now = now_unix();
    let valid = a
        .valid_seconds
        .unwrap_or(a.valid_days.saturating_mul(86_400));
    if valid == 0 {
        bail!("the validity must be at least one second");
    }
    let body = CertBody {
        issuer: [0; 8],
        network_id: a.network_id.clone(),
        name: a.name.clone(),
        public_key,
        tunnel_address: a.tunnel_address,
        // An hour of slack for clocks behind ours.
        not_before_unix: now.saturating_sub(3600),
        not_after_unix: now.saturating_add(valid),
        allowed_vnis: vnis,
        endpoints,
    };
    let cert = authority
        .sign(body)
        .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    files::write_certificate(&a.out, &cert)?;
    println!("{}", a.out.display());
    Ok(())
}

pub fn show(path: &Path, authority: Option<&str>) -> anyhow::Result<()> {
    let bytes = files::load_certificate(path)?;
    let (c, _) = SignedCert::parse(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let b = &c.body;
    let vnis = if b.allowed_vnis.is_empty() {
        "any".to_string()
    } else {
        b.allowed_vnis
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let eps: Vec<String> = b.endpoints.iter().map(ToString::to_string).collect();
    println!("name:           {}", b.name);
    println!("network_id:     {}", b.network_id);
    println!("public_key:     {}", b.public_key);
    println!("tunnel_address: {}", b.tunnel_address);
    println!("allowed_vnis:   {vnis}");
    println!("endpoints:      {}", eps.join(" "));
    println!("not_before:     {} (unix)", b.not_before_unix);
    println!("not_after:      {} (unix)", b.not_after_unix);
    if let Some(k) = authority {
        let k: AuthorityKey = k
            .parse()
            .map_err(|()| anyhow::anyhow!("--authority-public-key: not 32 bytes of base64"))?;
        match k.verify(&bytes, &b.network_id, now_unix()) {
            Ok(_) => println!("verified:       yes"),
            Err(e) => bail!("does not verify: {e}"),
        }
    }
    Ok(())
}

/// `vxsec fleet rotate --help`: the operator's steps.
pub const ROTATE_HELP: &str = "\
Roll this node's static X25519 key while traffic flows, with no packet lost.

Steps:
  1. On the node: make the new key (it never leaves the node):
       vxsec keygen --out /etc/vxsec/node.key.new
       vxsec pubkey --key /etc/vxsec/node.key.new
  2. Off the node, where the authority key lives: sign a certificate for the
     new public key with the node's SAME name, tunnel address, VNIs and
     endpoints as its current one (`vxsec fleet show` prints them):
       vxsec fleet sign --authority authority.key --public-key NEWPUB \\
         --name NODE --tunnel-address ADDR [--allowed-vni N]... [--endpoint H:P]... \\
         --network-id NET --out node.crt.new
     and copy node.crt.new to the node.
  3. On the node: vxsec fleet rotate --key /etc/vxsec/node.key.new --cert node.crt.new

The agent checks everything first (key file 0600, certificate signed by the
configured authority, for the new key, valid now, nothing but the key
changed) and changes nothing if a check fails. Then the new key is in use at
once, the new certificate replaces this node's record in etcd (same key, same
lease), peers switch to the new key without dropping their SAs, and the
configured `private_key_file` and `[fleet] certificate_file` are replaced
(atomically, the key 0600), so a restart uses the new identity. The old key
is still answered for `[fleet] rotation_grace_seconds` (default 600), then
retired (`vxsec fleet retire` ends the grace early). `vxsec status` shows the
rotation. The files given here may be removed afterwards.";

#[derive(clap::Args)]
pub struct RotateArgs {
    /// The new private key file (0600; `vxsec keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The new key's certificate (`vxsec fleet sign`, off-node).
    #[arg(long)]
    cert: PathBuf,
    #[command(flatten)]
    sock: crate::SocketArg,
}

pub fn rotate(a: &RotateArgs) -> anyhow::Result<()> {
    // The agent reads the files: give it absolute paths.
    let abs = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("{}: cannot open", p.display()))
    };
    let req = control::Request::RotateIdentity {
        private_key_file: abs(&a.key)?,
        certificate_file: abs(&a.cert)?,
    };
    let resp = control::request(&a.sock.socket, &req)?;
    println!("{}", resp.message.unwrap_or_default());
    Ok(())
}
