//! A real etcd cluster (Debian's `etcd-server`) on a lab underlay: one
//! member per bare underlay host namespace, started by the test and killed
//! by `Drop` (also on panic); its data lives in the caller's temp dir.
//! Records are read and written with curl through etcd's JSON gateway,
//! from inside the members' namespaces (the host cannot reach them). With
//! [`EtcdCluster::enable_auth`] the cluster requires user/password
//! authentication, and the helpers act as etcd's `root` user.

#![allow(clippy::disallowed_methods)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use vxsec_lab::topology::Topology;
use vxsec_lab::Cmd;
use vxsec_lab::Proc;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub struct Member {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub log: PathBuf,
    proc: Option<Proc>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    /// Client TLS (https with client certificates) when set.
    tls: Option<TlsFiles>,
    /// The `root` user's token once authentication is on.
    token: Option<String>,
}

/// PEM files of a throw-away CA, an etcd server and a client certificate.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Makes a CA, a server certificate for `server_ips` and a client
    /// certificate with the openssl CLI, in `dir` (keys 0600).
    pub fn generate(dir: &Path, server_ips: &[Ipv4Addr]) -> TlsFiles {
        use std::os::unix::fs::PermissionsExt;
        let p = |n: &str| dir.join(n);
        let ssl = |args: &[&str]| {
            Cmd::new("openssl")
                .args(args.iter().copied())
                .run()
                .expect("openssl");
        };
        let s = |x: &PathBuf| x.to_string_lossy().into_owned();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (ca_key, ca) = (s(&p("ca.key")), s(&p("ca.pem")));
        a.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=vxsec test CA",
        ]);
        ssl(&a);
        let sans: Vec<String> = server_ips.iter().map(|ip| format!("IP:{ip}")).collect();
        for (name, ext) in [
            (
                "server",
                format!(
                    "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                    sans.join(",")
                ),
            ),
            ("client", "extendedKeyUsage=clientAuth\n".to_string()),
        ] {
            let (key, csr, pem, extf) = (
                s(&p(&format!("{name}.key"))),
                s(&p(&format!("{name}.csr"))),
                s(&p(&format!("{name}.pem"))),
                p(&format!("{name}.ext")),
            );
            std::fs::write(&extf, ext).unwrap();
            let mut a = vec!["req"];
            a.extend(ec);
            let subj = format!("/CN={name}");
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            ssl(&a);
            let e = s(&extf);
            ssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &e,
            ]);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        TlsFiles {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        }
    }
}

/// Whether an etcd binary is installed (`apt-get install etcd-server`).
pub fn etcd_installed() -> bool {
    Cmd::new("etcd").arg("--version").run().is_ok()
}

impl EtcdCluster {
    /// Starts `n` members on underlay hosts 192.168.77.101.. and waits
    /// until every member reports healthy.
    pub fn start(topo: &mut Topology, n: u8, dir: &Path) -> EtcdCluster {
        Self::start_with(topo, n, dir, None)
    }

    /// As [`EtcdCluster::start`]; with `tls`, clients must use https and
    /// present a certificate signed by its CA.
    pub fn start_with(
        topo: &mut Topology,
        n: u8,
        dir: &Path,
        tls: Option<TlsFiles>,
    ) -> EtcdCluster {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut members = Vec::new();
        for k in 1..=n {
            let ip = Ipv4Addr::new(192, 168, 77, 100 + k);
            let ns = topo.add_underlay_host(100 + k).expect("etcd host");
            members.push(Member {
                name: format!("e{k}"),
                ns,
                ip,
                log: dir.join(format!("etcd-e{k}.log")),
                proc: None,
            });
        }
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://{}:2380", m.name, m.ip))
            .collect();
        let initial = initial.join(",");
        for m in &mut members {
            let data = dir.join(format!("etcd-{}", m.name));
            let mut cmd = Cmd::in_netns(&m.ns, "etcd")
                .args(["--name", m.name.as_str(), "--data-dir"])
                .arg(data.to_string_lossy())
                .arg("--listen-client-urls")
                .arg(format!("{scheme}://{}:2379", m.ip))
                .arg("--advertise-client-urls")
                .arg(format!("{scheme}://{}:2379", m.ip));
            if let Some(t) = &tls {
                cmd = cmd
                    .arg("--client-cert-auth")
                    .arg("--trusted-ca-file")
                    .arg(t.ca.to_string_lossy())
                    .arg("--cert-file")
                    .arg(t.server_cert.to_string_lossy())
                    .arg("--key-file")
                    .arg(t.server_key.to_string_lossy());
            }
            let proc = cmd
                .arg("--listen-peer-urls")
                .arg(format!("http://{}:2380", m.ip))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://{}:2380", m.ip))
                .args(["--initial-cluster", initial.as_str()])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", topo.id.as_str()])
                .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
                .spawn_logged(&m.log)
                .expect("spawn etcd");
            m.proc = Some(proc);
        }
        let c = EtcdCluster {
            members,
            tls,
            token: None,
        };
        for k in 0..c.members.len() {
            c.wait_healthy(k, Duration::from_secs(30));
        }
        c
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}:2379", self.scheme(), m.ip))
            .collect()
    }

    /// curl with the client certificate when TLS is on.
    fn curl_cmd(&self, m: &Member) -> Cmd {
        let mut c = Cmd::in_netns(&m.ns, "curl").args(["-sS", "--max-time", "3"]);
        if let Some(t) = &self.tls {
            c = c
                .arg("--cacert")
                .arg(t.ca.to_string_lossy())
                .arg("--cert")
                .arg(t.client_cert.to_string_lossy())
                .arg("--key")
                .arg(t.client_key.to_string_lossy());
        }
        c
    }

    fn curl(&self, k: usize, path: &str, body: &str) -> Result<serde_json::Value, String> {
        self.curl_as(k, self.token.as_deref(), path, body)
    }

    /// A POST to the JSON gateway of member `k`, with `token` (from
    /// [`EtcdCluster::authenticate`]) when given.
    fn curl_as(
        &self,
        k: usize,
        token: Option<&str>,
        path: &str,
        body: &str,
    ) -> Result<serde_json::Value, String> {
        let m = &self.members[k];
        let mut cmd = self.curl_cmd(m);
        if let Some(t) = token {
            cmd = cmd.args(["-H", &format!("Authorization: {t}")]);
        }
        let out = cmd
            .args(["-X", "POST", "-d", body])
            .arg(format!("{}://{}:2379{path}", self.scheme(), m.ip))
            .run()
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
    }

    pub fn wait_healthy(&self, k: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let m = &self.members[k];
            let out = self
                .curl_cmd(m)
                .arg(format!("{}://{}:2379/health", self.scheme(), m.ip))
                .run()
                .unwrap_or_default();
            if out.contains("\"health\":\"true\"") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd {} not healthy: {out}\n{}",
                m.name,
                std::fs::read_to_string(&m.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&k| self.members[k].proc.is_some())
    }

    /// Writes `key` = `value` through a live member.
    pub fn put(&self, key: &str, value: &[u8]) {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            B64.encode(key),
            B64.encode(value)
        );
        let k = self.alive().next().expect("a live member");
        let r = self.curl(k, "/v3/kv/put", &body).expect("put");
        assert!(r.get("header").is_some(), "put failed: {r}");
    }

    /// Writes `key` = `value` as the holder of `token`; returns etcd's
    /// answer (an `error` field when refused).
    pub fn put_as(&self, token: &str, key: &str, value: &[u8]) -> serde_json::Value {
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            B64.encode(key),
            B64.encode(value)
        );
        let k = self.alive().next().expect("a live member");
        self.curl_as(k, Some(token), "/v3/kv/put", &body)
            .expect("put answered")
    }

    /// Logs in as `user`: its token, or etcd's refusal.
    pub fn authenticate(&self, user: &str, password: &str) -> Result<String, String> {
        let body = serde_json::json!({ "name": user, "password": password }).to_string();
        let k = self.alive().next().expect("a live member");
        let r = self.curl_as(k, None, "/v3/auth/authenticate", &body)?;
        r.get("token")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| r.to_string())
    }

    /// Turns user/password authentication on, as production clusters run:
    /// a `root` user (etcd needs it, with the `root` role, before `auth
    /// enable`), and `user` with one role, `vxsec-fleet`, that may read
    /// and write the keys under `prefix` and nothing else. The helpers
    /// then act as `root`.
    pub fn enable_auth(&mut self, root_password: &str, user: &str, password: &str, prefix: &str) {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let steps = [
            (
                "/v3/auth/user/add",
                serde_json::json!({ "name": "root", "password": root_password }),
            ),
            ("/v3/auth/role/add", serde_json::json!({ "name": "root" })),
            (
                "/v3/auth/user/grant",
                serde_json::json!({ "user": "root", "role": "root" }),
            ),
            (
                "/v3/auth/role/add",
                serde_json::json!({ "name": "vxsec-fleet" }),
            ),
            (
                "/v3/auth/role/grant",
                serde_json::json!({
                    "name": "vxsec-fleet",
                    "perm": {
                        "permType": "READWRITE",
                        "key": B64.encode(prefix),
                        "range_end": B64.encode(&end),
                    },
                }),
            ),
            (
                "/v3/auth/user/add",
                serde_json::json!({ "name": user, "password": password }),
            ),
            (
                "/v3/auth/user/grant",
                serde_json::json!({ "user": user, "role": "vxsec-fleet" }),
            ),
            ("/v3/auth/enable", serde_json::json!({})),
        ];
        let k = self.alive().next().expect("a live member");
        for (path, body) in steps {
            let r = self.curl(k, path, &body.to_string()).expect(path);
            assert!(
                r.get("header").is_some() && r.get("error").is_none(),
                "{path}: {r}"
            );
        }
        self.token = Some(
            self.authenticate("root", root_password)
                .expect("root logs in"),
        );
    }

    /// Adds `user` with no role at all (authentication on): it can log
    /// in, and every read or write is refused.
    pub fn add_user_without_role(&self, user: &str, password: &str) {
        let body = serde_json::json!({ "name": user, "password": password }).to_string();
        let k = self.alive().next().expect("a live member");
        let r = self.curl(k, "/v3/auth/user/add", &body).expect("user add");
        assert!(r.get("error").is_none(), "user add: {r}");
    }

    /// Writes many records, 100 per transaction.
    pub fn put_many(&self, records: &[(String, Vec<u8>)]) {
        let k = self.alive().next().expect("a live member");
        for chunk in records.chunks(100) {
            let ops: Vec<String> = chunk
                .iter()
                .map(|(key, v)| {
                    format!(
                        "{{\"requestPut\":{{\"key\":\"{}\",\"value\":\"{}\"}}}}",
                        B64.encode(key),
                        B64.encode(v)
                    )
                })
                .collect();
            let body = format!("{{\"success\":[{}]}}", ops.join(","));
            let r = self.curl(k, "/v3/kv/txn", &body).expect("txn");
            assert_eq!(r["succeeded"], true, "txn failed: {r}");
        }
    }

    /// Keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = format!(
            "{{\"key\":\"{}\",\"range_end\":\"{}\",\"keys_only\":true}}",
            B64.encode(prefix),
            B64.encode(&end)
        );
        let k = self.alive().next().expect("a live member");
        let r = self.curl(k, "/v3/kv/range", &body).expect("range");
        r.get("kvs")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|kv| kv.get("key")?.as_str())
                    .filter_map(|k| String::from_utf8(B64.decode(k).ok()?).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The index of the current leader.
    pub fn leader(&self) -> usize {
        for k in self.alive() {
            if let Ok(r) = self.curl(k, "/v3/maintenance/status", "{}") {
                let me = r.pointer("/header/member_id").and_then(|v| v.as_str());
                let leader = r.get("leader").and_then(|v| v.as_str());
                if me.is_some() && me == leader {
                    return k;
                }
            }
        }
        panic!("no etcd member is leader");
    }

    /// SIGKILLs member `k`.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut p) = self.members[k].proc.take() {
            p.kill();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut p) = m.proc.take() {
                p.kill();
            }
        }
    }
}
