//! nftables through the `nft` tool's JSON mode (the `nftables` crate):
//! apply a document as one atomic transaction, read one table back, delete
//! a table. It builds no rules itself: `agent::guard` decides what the
//! agent's table holds.

use nftables::helper::{self, NftablesError};
use nftables::schema::{NfListObject, NfObject, Nftables};
use nftables::types::NfFamily;

use super::IoError;

fn family_name(f: NfFamily) -> &'static str {
    match f {
        NfFamily::IP => "ip",
        NfFamily::IP6 => "ip6",
        NfFamily::INet => "inet",
        NfFamily::ARP => "arp",
        NfFamily::Bridge => "bridge",
        NfFamily::NetDev => "netdev",
    }
}

fn nft_error(op: &'static str, e: NftablesError) -> IoError {
    let message = match e {
        NftablesError::NftExecution { program, inner } => format!(
            "cannot run {}: {inner} (install the `nftables` package)",
            program.to_string_lossy()
        ),
        NftablesError::NftFailed {
            hint,
            stdout,
            stderr,
            ..
        } => format!(
            "nft failed while {hint}: {}{}",
            stderr.trim(),
            stdout.trim()
        ),
        other => other.to_string(),
    };
    IoError::Netlink { op, message }
}

/// Applies `doc` with `nft -j -f -`: all of it or nothing (one transaction).
pub fn apply(doc: &Nftables<'_>) -> Result<(), IoError> {
    helper::apply_ruleset(doc).map_err(|e| nft_error("nft apply", e))
}

/// Does table `family name` exist?
pub fn table_exists(family: NfFamily, name: &str) -> Result<bool, IoError> {
    let doc = helper::get_current_ruleset_with_args(helper::DEFAULT_NFT, ["list", "tables"])
        .map_err(|e| nft_error("nft list tables", e))?;
    Ok(doc.objects.iter().any(|o| {
        matches!(o, NfObject::ListObject(NfListObject::Table(t))
            if t.family == family && t.name == name)
    }))
}

/// The objects (table, chains, rules with their counters) of table
/// `family name`, or `None` when it does not exist.
pub fn list_table(
    family: NfFamily,
    name: &str,
) -> Result<Option<Vec<NfListObject<'static>>>, IoError> {
    if !table_exists(family, name)? {
        return Ok(None);
    }
    let doc = helper::get_current_ruleset_with_args(
        helper::DEFAULT_NFT,
        ["list", "table", family_name(family), name],
    )
    .map_err(|e| nft_error("nft list table", e))?;
    let objects = doc
        .objects
        .iter()
        .filter_map(|o| match o {
            NfObject::ListObject(l) => Some(l.clone()),
            NfObject::CmdObject(_) => None,
        })
        .collect();
    Ok(Some(objects))
}

/// Deletes table `family name`; Ok(false) when it did not exist.
pub fn delete_table(family: NfFamily, name: &str) -> Result<bool, IoError> {
    if !table_exists(family, name)? {
        return Ok(false);
    }
    let args = ["delete", "table", family_name(family), name];
    helper::get_current_ruleset_raw(helper::DEFAULT_NFT, args)
        .map_err(|e| nft_error("nft delete table", e))?;
    Ok(true)
}
