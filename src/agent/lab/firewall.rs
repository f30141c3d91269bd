//! The firewall rule vxsec recommends in route mode, and a helper that
//! applies it inside a namespace. Kernel VXLAN's UDP socket listens on every
//! local address, so without it a host on the underlay can inject cleartext
//! VXLAN straight into the overlay; the rule accepts UDP to the VXLAN port
//! only when it comes out of the vxsec TUN (i.e. was decrypted and
//! authenticated). It does not manage any other firewall state.

use super::cmd::{Cmd, LabError};

/// nftables ruleset (for `nft -f`) dropping VXLAN that did not come through
/// `tun` (e.g. `vxsec0`).
pub fn recommended_nft_rules(tun: &str, vxlan_port: u16) -> String {
    format!(
        "table inet vxsec {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority -10; policy accept;\n\
         \t\tudp dport {vxlan_port} iifname != \"{tun}\" counter drop comment \"cleartext VXLAN must come through {tun}\"\n\
         \t}}\n\
         }}\n"
    )
}

/// Applies `recommended_nft_rules` in namespace `ns` (needs `nft`).
pub fn apply_recommended(ns: &str, tun: &str, vxlan_port: u16) -> Result<(), LabError> {
    let path = std::env::temp_dir().join(format!("vxsec-nft-{ns}.nft"));
    std::fs::write(&path, recommended_nft_rules(tun, vxlan_port))
        .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
    let res = Cmd::in_netns(ns, "nft")
        .arg("-f")
        .arg(path.to_string_lossy())
        .run();
    let _ = std::fs::remove_file(&path);
    res.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_port_and_tun() {
        let r = recommended_nft_rules("vxsec0", 4789);
        assert!(r.contains("udp dport 4789 iifname != \"vxsec0\""), "{r}");
        assert!(r.contains("hook input"));
    }
}
