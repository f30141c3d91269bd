//! Fleet mode against a real etcd with user/password authentication on, as
//! production clusters run it: agents log in as a `vxsec` user whose role
//! may read and write the network's prefix and nothing else, with the
//! password read from a 0600 `password_file`. Two agents with the right
//! password join and carry traffic; an agent with a wrong one does not
//! join, says why (status not connected, etcd's authentication error in
//! its log), keeps running with its static peer, and joins once given the
//! right password; a user without the role is refused and says so too; a
//! password file others can read stops the agent with a config error; no
//! password ever appears in a log or in `status`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fleet_lab::{can_run, wait_for, FleetLab};

const ROOT_PASSWORD: &str = "root-Zq8w-not-for-agents";
const USER: &str = "vxsec";
const PASSWORD: &str = "fleet-Kx41-right-password";
const WRONG_PASSWORD: &str = "fleet-Kx41-wrong-password";
/// A user etcd knows but whose (absent) role covers no key.
const ROLELESS_USER: &str = "vxsec-roleless";
const ROLELESS_PASSWORD: &str = "fleet-Kx41-roleless-password";

/// A password file as production expects it: 0600, one line.
fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Node `i` logs in to etcd as `user` with the password in `file`.
fn use_credentials(lab: &mut FleetLab, i: u8, user: &str, file: &Path) {
    let mut fleet = lab.fleet_section(i);
    fleet.push_str(&format!(
        "user = \"{user}\"\npassword_file = \"{}\"\n",
        file.display()
    ));
    lab.cluster.set_extra_config(i, fleet).unwrap();
}

fn full_log(lab: &FleetLab, i: u8) -> String {
    let a = lab.cluster.agent(i).unwrap();
    std::fs::read_to_string(&a.log_file).unwrap_or_default()
}

#[test]
fn fleet_over_etcd_with_user_password_auth() {
    if !can_run("fleet_over_etcd_with_user_password_auth") {
        return;
    }
    let mut lab = FleetLab::new(1, false);
    let prefix = format!("/vxsec/{}/", lab.cluster.network_id());
    lab.etcd.enable_auth(ROOT_PASSWORD, USER, PASSWORD, &prefix);

    // The cluster really checks: no anonymous writes, the user's role
    // covers the network's prefix only, a wrong password is refused.
    let anonymous = lab.etcd.authenticate(USER, WRONG_PASSWORD);
    let refusal = anonymous.expect_err("etcd refuses a wrong password");
    assert!(refusal.contains("authentication failed"), "{refusal}");
    let token = lab.etcd.authenticate(USER, PASSWORD).expect("user logs in");
    let inside = lab.etcd.put_as(&token, &format!("{prefix}probe"), b"x");
    assert!(inside.get("error").is_none(), "inside the prefix: {inside}");
    let outside = lab.etcd.put_as(&token, "/elsewhere/probe", b"x");
    assert!(
        outside.to_string().contains("permission denied"),
        "outside the prefix: {outside}"
    );

    let dir = lab.dir.path().to_path_buf();
    let right = password_file(&dir, "etcd-password", PASSWORD);
    let wrong = password_file(&dir, "etcd-password-wrong", WRONG_PASSWORD);
    use_credentials(&mut lab, 1, USER, &right);
    use_credentials(&mut lab, 2, USER, &right);
    use_credentials(&mut lab, 3, USER, &wrong);
    // node1 and node3 are also static peers of each other: node3 must
    // keep that peer while etcd turns it away.
    lab.cluster.set_peers(1, vec![(3, None)]).unwrap();
    lab.cluster.set_peers(3, vec![(1, None)]).unwrap();
    for i in 1..=3 {
        lab.start(i);
    }

    // 1. The right password: both join, traffic flows over fleet peers.
    assert!(lab.ping_ok(1, 2, 20), "node1 -> node2 over fleet peers");
    assert!(lab.ping_ok(2, 1, 5), "node2 -> node1");
    for i in [1, 2] {
        let f = lab.fleet(i);
        assert_eq!(f["connected"], true, "node{i}: {f}");
        assert_eq!(f["peers"], 1, "node{i}: only the other node joined: {f}");
    }

    // 2. The wrong password: node3 is not connected, says why, is not in
    //    etcd and is nobody's fleet peer, yet runs with its static peer.
    wait_for(10, "node3 tried and failed to log in", || {
        lab.fleet(3)["reconnects"].as_u64() >= Some(1)
    });
    let f3 = lab.fleet(3);
    assert_eq!(f3["connected"], false, "{f3}");
    assert_eq!(f3["peers"], 0, "{f3}");
    assert!(f3["last_sync_seconds"].is_null(), "never synced: {f3}");
    let log3 = full_log(&lab, 3);
    assert!(
        log3.contains("etcd refused this node's credentials")
            && log3.contains("authentication failed"),
        "node3's log names the authentication failure:\n{log3}"
    );
    if let Some(line) = log3.lines().find(|l| l.contains("authentication failed")) {
        println!("node3: {line}");
    }
    assert!(lab.cluster.is_running(3).unwrap(), "node3 keeps running");
    assert!(lab.ping_ok(3, 1, 20), "node3 -> node1 over its static peer");
    let keys = lab.etcd.keys(&lab.records_prefix());
    assert!(keys.iter().any(|k| k.ends_with("10.200.0.1")), "{keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("10.200.0.2")), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.ends_with("10.200.0.3")),
        "node3 published nothing: {keys:?}"
    );
    assert!(
        !lab.peer_addrs(2).iter().any(|a| a == "10.200.0.3"),
        "node3 is not node2's peer"
    );

    // 3. A user etcd lets in but whose role does not cover the prefix:
    //    node3 logs in, is refused the write, and says so the same way.
    lab.etcd
        .add_user_without_role(ROLELESS_USER, ROLELESS_PASSWORD);
    let roleless = password_file(&dir, "etcd-password-roleless", ROLELESS_PASSWORD);
    lab.cluster.stop(3, Duration::from_secs(10)).unwrap();
    let before = full_log(&lab, 3).len();
    use_credentials(&mut lab, 3, ROLELESS_USER, &roleless);
    lab.cluster.start(3).unwrap();
    wait_for(10, "node3 refused as a user without the role", || {
        lab.fleet(3)["reconnects"].as_u64() >= Some(1)
    });
    let f3 = lab.fleet(3);
    assert_eq!(f3["connected"], false, "{f3}");
    let run2 = full_log(&lab, 3).split_off(before);
    assert!(
        run2.contains("etcd refused this node's credentials") && run2.contains("permission denied"),
        "node3's log names the refused permission:\n{run2}"
    );
    assert!(lab.ping_ok(3, 1, 20), "node3 -> node1, static peer again");

    // 4. A password file others can read is a configuration error: the
    //    agent refuses to start and names the file and the fix.
    lab.cluster.stop(3, Duration::from_secs(10)).unwrap();
    let readable = password_file(&dir, "etcd-password-0644", PASSWORD);
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = full_log(&lab, 3).len();
    use_credentials(&mut lab, 3, USER, &readable);
    assert!(
        lab.cluster.start(3).is_err(),
        "node3 refuses a 0644 password file"
    );
    let run3 = full_log(&lab, 3).split_off(before);
    assert!(
        run3.contains(&format!("{}: mode 0644", readable.display())) && run3.contains("chmod 600"),
        "node3's error names the file and the fix:\n{run3}"
    );

    // 5. Given the right user and password (and a restart: credentials are
    //    read at start), node3 joins and reaches node2 over a fleet peer.
    use_credentials(&mut lab, 3, USER, &right);
    lab.cluster.start(3).unwrap();
    wait_for(20, "node3 joins", || lab.fleet(3)["connected"] == true);
    assert!(lab.ping_ok(3, 2, 20), "node3 -> node2 over a fleet peer");
    wait_for(10, "node2 learns node3", || {
        lab.peer_addrs(2).iter().any(|a| a == "10.200.0.3")
    });

    // 6. No password in any log (all of node3's runs) or status.
    for i in 1..=3 {
        let log = full_log(&lab, i);
        let status = lab.cluster.ctl(i, &["status"]).unwrap_or_default();
        let json = lab.cluster.status_json(i).unwrap().to_string();
        for secret in [PASSWORD, WRONG_PASSWORD, ROOT_PASSWORD, ROLELESS_PASSWORD] {
            for (what, text) in [("log", &log), ("status", &status), ("status --json", &json)] {
                assert!(!text.contains(secret), "node{i}'s {what} shows a password");
            }
        }
    }
}
