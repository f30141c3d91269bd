//! `vxsec fleet init | sign | show`: thin wrappers over `vxsec::fleet`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vxsec::agent::config::resolve_endpoint;
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
